"""``python -m examples.chat`` (from the repository root) runs the chat demo."""

import sys

from examples.chat.app import main

sys.exit(main())

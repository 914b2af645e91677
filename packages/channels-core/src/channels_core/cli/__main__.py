"""``python -m channels_core.cli`` is the ``channels`` command."""

import sys

from ._main import main

sys.exit(main())

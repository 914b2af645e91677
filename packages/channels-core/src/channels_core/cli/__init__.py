"""The ``channels`` command line: inspect layers, publish, subscribe, measure.

Standard library only (argparse), so the core gains no dependency for it.
"""

from ._main import console_main, main

__all__ = ["console_main", "main"]

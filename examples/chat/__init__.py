"""The channels chat demo: see `examples.chat.app` (run it with ``python -m examples.chat``)."""

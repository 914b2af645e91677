"""The channels benchmark suite: our layers against the raw clients and encode/broadcaster.

Run it from the repository root with ``python -m benchmarks`` (``--quick`` for
the CI smoke run). See benchmarks/README.md.
"""

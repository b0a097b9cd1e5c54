"""Benchmarks: not part of the test run. Run from the repository root, e.g.
``.venv/bin/python -m benchmarks.decode_cpu``; each prints a table and writes JSON to
``benchmarks/results/``."""

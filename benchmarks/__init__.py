"""Benchmark scripts: each prints a table; run as `python -m benchmarks.<name>`."""

"""Benchmark suite: `python -m bench.run` (or `make bench`). See bench/run.py."""

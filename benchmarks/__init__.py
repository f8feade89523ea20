"""Benchmarks (run as scripts: ``python benchmarks/bench_train.py``)."""

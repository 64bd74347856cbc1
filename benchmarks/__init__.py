"""Benchmarks: ``make bench`` (``python -m benchmarks``) runs them all and prints tables."""

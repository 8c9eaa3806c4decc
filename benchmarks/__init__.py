"""Benchmarks: each checks the product against its goals and exits non-zero on a miss."""

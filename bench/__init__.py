"""Benchmarks: each prints a small table of measured figures."""

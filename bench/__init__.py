"""Benchmarks: scripts that print a table and write JSON (``python -m bench.prep_scaling``)."""

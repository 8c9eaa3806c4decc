"""Aggregation, secure aggregation and privacy accounting: pure Python and numpy, no Django."""

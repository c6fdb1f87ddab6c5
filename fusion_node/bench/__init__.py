"""Benchmarks behind `fusion bench`: sync, backends, end-to-end."""

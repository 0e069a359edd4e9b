"""Benchmarks of iterum-sidecar: ``python -m bench`` (see docs/performance.md)."""

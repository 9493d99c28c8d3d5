"""Benchmarks: each module exposes ``run(points=None, quick=False, device="cpu") -> list[dict]``."""

"""Helpers shipped for tests and benchmarks: phantoms with exact truth, hypothesis strategies."""

from tiledseg.testing.phantoms import Phantom, make_phantom

__all__ = ["Phantom", "make_phantom"]

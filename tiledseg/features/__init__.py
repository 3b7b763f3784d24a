"""Filter-bank features: banks (what to compute) and per-block kernels (how)."""

from tiledseg.features.bank import FAMILIES, NAMED_BANKS, FeatureBank, resolve_bank
from tiledseg.features.filters import block_features, symmetric_eigenvalues

__all__ = [
    "FAMILIES",
    "NAMED_BANKS",
    "FeatureBank",
    "block_features",
    "resolve_bank",
    "symmetric_eigenvalues",
]

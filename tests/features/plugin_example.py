"""A plug-in feature as a user would write it, in an importable module of its own.

Banks name it ``plugin_example:smoothed_and_max``; the tests that run it in other
processes (the CLI, dask workers) put this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from tiledseg import feature_plugin
from tiledseg.features.bank import TRUNCATE, kernel_radius


def reference(image: np.ndarray, scale: float, spacing) -> np.ndarray:
    """What the plug-in computes, on a whole array."""
    smooth = ndi.gaussian_filter(
        image.astype(np.float32),
        [scale / r for r in spacing],
        mode="reflect",
        truncate=TRUNCATE,
        output=np.float32,
    )
    return np.stack([smooth, ndi.maximum_filter(smooth, size=3, mode="reflect")])


@feature_plugin(halo=lambda scale: kernel_radius(scale) + 1, outputs=2, scale="sigma")
def smoothed_and_max(image: np.ndarray, scale: float, *, spacing) -> np.ndarray:
    """A Gaussian blur and the 3-voxel maximum of it: the blur's radius plus one of reach."""
    return reference(image, scale, spacing)

"""Every kernel on both array backends: numpy blocks, and cupy blocks where there is a GPU.

Every family, on the blocks of an uneven tiling (haloed reads as the engine makes
them), in 2D and 3D, isotropic and anisotropic, against the untiled CPU result.
On numpy the blocks equal it to the bit. cupyx's filters use float32 too, but other
summation orders: on cupy, values agree to float32 rounding (normalized by each
feature's largest magnitude), not to the bit; each cupy block equals the untiled
cupy result to the bit, since a voxel's features depend only on its neighbourhood.
"""

from __future__ import annotations

import numpy as np
import pytest

from tiledseg.arrays import to_host
from tiledseg.blocks import plan_blocks
from tiledseg.features import FAMILIES, FeatureBank, block_features
from tiledseg.features.backend import get_backend

BANK = FeatureBank({f: [0.7, 1.6] for f in FAMILIES})

#: Normalized tolerance of GPU features against CPU ones (float32, other sum orders).
GPU_ATOL = 2e-5


@pytest.mark.parametrize(
    ("shape", "block", "spacing"),
    [((45, 38), (17, 20), (1.0, 1.0)), ((21, 30, 26), (9, 13, 11), (2.0, 1.0, 1.0))],
)
def test_kernels_on_each_backend_equal_the_untiled_cpu_result(xp, shape, block, spacing):
    image = (np.random.default_rng(3).random(shape, dtype=np.float32) * 200).astype(np.float32)
    halo = BANK.halo(spacing)
    whole = (slice(None),) * len(shape)
    cpu = block_features(image[np.newaxis], bank=BANK, inner=whole, spacing=spacing)
    untiled = block_features(xp.asarray(image[np.newaxis]), bank=BANK, inner=whole, spacing=spacing)
    assert get_backend(untiled).xp is xp
    untiled = to_host(untiled)
    scale = np.abs(cpu).max(axis=tuple(range(1, cpu.ndim)), keepdims=True) + 1e-6
    if xp is np:
        np.testing.assert_array_equal(untiled, cpu)
    else:
        np.testing.assert_allclose(untiled / scale, cpu / scale, atol=GPU_ATOL)
    blocks = plan_blocks(shape, block, halo)
    assert len(blocks) > 2
    assert len({b.shape for b in blocks}) > 1
    for b in blocks:
        got = block_features(
            xp.asarray(image[b.read][np.newaxis]), bank=BANK, inner=b.inner, spacing=spacing
        )
        assert isinstance(got, xp.ndarray)
        np.testing.assert_array_equal(to_host(got), untiled[(slice(None), *b.region)])


def _local_range(image, scale, *, spacing):
    """A numpy-only plug-in (scipy's filters): GPU blocks reach it on the host."""
    from scipy import ndimage

    size = 2 * int(scale) + 1
    return (ndimage.maximum_filter(image, size) - ndimage.minimum_filter(image, size))[None]


def test_plugins_get_host_blocks_on_each_backend(xp, monkeypatch):
    from tiledseg.features import plugins

    monkeypatch.setattr(plugins, "_REGISTRY", {})
    plugins.register_feature(_local_range, halo=lambda s: int(s), outputs=1, name="local_range")
    bank = FeatureBank({"gaussian_smoothing": [1.0], "local_range": [2.0]})
    shape, block = (33, 29), (12, 10)
    image = np.random.default_rng(5).random(shape, dtype=np.float32)
    whole = (slice(None),) * 2
    cpu = block_features(image[np.newaxis], bank=bank, inner=whole)
    for b in plan_blocks(shape, block, bank.halo((1.0, 1.0))):
        got = block_features(xp.asarray(image[b.read][np.newaxis]), bank=bank, inner=b.inner)
        assert isinstance(got, xp.ndarray)
        # the plug-in's values are the CPU's on every backend: it runs on the host
        np.testing.assert_array_equal(to_host(got)[1], cpu[(1, *b.region)])

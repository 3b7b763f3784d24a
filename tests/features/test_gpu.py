"""The kernels on cupy blocks against the same kernels on numpy blocks (needs a GPU).

Every family, on the blocks of an uneven tiling (haloed reads as the engine makes
them), in 2D and 3D, isotropic and anisotropic. cupyx's filters use float32 too, but
other summation orders: values agree to float32 rounding, not to the bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from tiledseg.blocks import plan_blocks
from tiledseg.features import FAMILIES, FeatureBank, block_features

pytestmark = pytest.mark.gpu
cp = pytest.importorskip("cupy")

BANK = FeatureBank({f: [0.7, 1.6] for f in FAMILIES})


@pytest.mark.parametrize(
    ("shape", "block", "spacing"),
    [((45, 38), (17, 20), (1.0, 1.0)), ((21, 30, 26), (9, 13, 11), (2.0, 1.0, 1.0))],
)
def test_gpu_kernels_equal_the_cpu_ones_on_uneven_blocks(shape, block, spacing):
    if cp.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("no CUDA device")
    image = (np.random.default_rng(3).random(shape, dtype=np.float32) * 200).astype(np.float32)
    halo = BANK.halo(spacing)
    for b in plan_blocks(shape, block, halo):
        haloed = image[b.read][np.newaxis]
        cpu = block_features(haloed, bank=BANK, inner=b.inner, spacing=spacing)
        gpu = block_features(cp.asarray(haloed), bank=BANK, inner=b.inner, spacing=spacing)
        assert isinstance(gpu, cp.ndarray)
        scale = np.abs(cpu).max(axis=tuple(range(1, cpu.ndim)), keepdims=True) + 1e-6
        np.testing.assert_allclose(cp.asnumpy(gpu) / scale, cpu / scale, atol=2e-5)

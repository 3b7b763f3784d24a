"""Choosing the device and a GPU block size: pure decisions, tested without a GPU."""

from __future__ import annotations

import math

import pytest

from tiledseg.device import _WORKING_ARRAYS, check_device, gpu_block, gpu_count, resolve_device
from tiledseg.errors import MissingExtraError, TiledsegError


def test_device_names_are_checked():
    assert check_device(None) == "cpu"
    assert [check_device(d) for d in ("cpu", "cuda", "auto")] == ["cpu", "cuda", "auto"]
    with pytest.raises(TiledsegError, match="--device 'gpu' is unknown; use one of cpu, cuda"):
        check_device("gpu")


def test_auto_falls_back_to_the_cpu_without_a_gpu():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if gpu_count() else "cpu")


def test_cuda_without_cupy_says_what_to_install():
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r"pip install 'tiledseg\[gpu\]'"):
            resolve_device("cuda")
    else:
        pytest.skip("cupy is installed: the error for a missing cupy cannot occur")


@pytest.mark.parametrize("free_gib", [2, 16, 78, 139])
@pytest.mark.parametrize(("n_features", "halo"), [(18, (12, 12, 12)), (60, (4, 9, 9))])
def test_the_gpu_block_is_the_largest_that_fits(free_gib, n_features, halo):
    free = free_gib * 2**30
    block = gpu_block(free, n_features=n_features, halo=halo, n_classes=3)
    edge = block[0]
    assert block == (edge,) * 3
    assert edge % 16 == 0
    assert edge >= max(halo)

    def cost(e):
        haloed = math.prod(e + 2 * h for h in halo)
        return 4.0 * (_WORKING_ARRAYS * haloed + (n_features + 3) * e**3)

    assert cost(edge) <= free / 2 < cost(edge + 16)


def test_more_memory_never_gives_a_smaller_block():
    edges = [gpu_block(g * 2**30, n_features=18, halo=(12,) * 3)[0] for g in (1, 4, 16, 64)]
    assert edges == sorted(edges)
    assert edges[0] < edges[-1]
    with pytest.raises(TiledsegError, match="free memory > 0"):
        gpu_block(0, n_features=18, halo=(1, 1))

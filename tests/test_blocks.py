"""Block planning: checked block sizes, and a grid whose write regions partition the volume."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiledseg.blocks import DEFAULT_BLOCK, Block, plan_blocks, resolve_block
from tiledseg.errors import BlockSizeError, TiledsegError
from tiledseg.testing import strategies as tst

# -- resolve_block ---------------------------------------------------------------------------


@pytest.mark.parametrize("block", [0, -1, (0, 16), (16, -3), "0", "16,0", [-5]])
def test_non_positive_sizes_are_refused(block):
    with pytest.raises(BlockSizeError, match="positive integer"):
        resolve_block(block, shape=(100, 100), halo=(2, 2))


@pytest.mark.parametrize("block", ["big", "16,x", "1.5"])
def test_unparsable_text_is_refused(block):
    with pytest.raises(BlockSizeError, match="integer"):
        resolve_block(block, shape=(100, 100), halo=(2, 2))


def test_wrong_number_of_sizes_is_refused():
    with pytest.raises(BlockSizeError, match="3 sizes but the volume has 2 spatial axes"):
        resolve_block((16, 16, 16), shape=(100, 100), halo=(2, 2))


@pytest.mark.parametrize(
    ("block", "halo", "axis", "size", "need"),
    [
        (10, (12, 3), "y", 10, 12),
        ((40, 7), (5, 9), "x", 7, 9),
        ("30,8,40", (4, 11, 4), "y", 8, 11),
        ((3, 30, 30), (4, 1, 1), "z", 3, 4),
    ],
)
def test_block_smaller_than_halo_names_both_numbers(block, halo, axis, size, need):
    shape = (50,) * len(halo)
    with pytest.raises(BlockSizeError) as info:
        resolve_block(block, shape=shape, halo=halo)
    message = str(info.value)
    assert f"block size {size} along {axis}" in message
    assert f"halo {need}" in message
    assert isinstance(info.value, TiledsegError)
    assert isinstance(info.value, ValueError)


def test_block_below_halo_is_fine_when_it_covers_the_axis():
    # the volume is only 5 long along y: one block covers it, no halo is read there
    assert resolve_block((5, 20), shape=(5, 100), halo=(12, 12)) == (5, 20)
    assert resolve_block(8, shape=(5, 100), halo=(12, 8)) == (5, 8)


def test_sizes_are_clipped_to_the_shape_and_parsed():
    assert resolve_block(64, shape=(30, 100), halo=(2, 2)) == (30, 64)
    assert resolve_block("16,32", shape=(100, 100), halo=(2, 2)) == (16, 32)
    assert resolve_block("24", shape=(100, 100, 100), halo=(2, 2, 2)) == (24, 24, 24)
    assert resolve_block([np.int64(20), 21], shape=(100, 100), halo=(2, 2)) == (20, 21)


def test_default_block_is_enlarged_to_the_halo():
    assert resolve_block(None, shape=(5000, 5000), halo=(6, 6)) == DEFAULT_BLOCK[2]
    assert resolve_block(None, shape=(500, 500, 500), halo=(6, 6, 6)) == DEFAULT_BLOCK[3]
    assert resolve_block(None, shape=(500, 500, 500), halo=(200, 6, 150)) == (200, 128, 150)
    assert resolve_block(None, shape=(3000, 3000), halo=(1500, 10)) == (1500, 1024)
    # but never beyond the volume
    assert resolve_block(None, shape=(40, 500, 90), halo=(200, 6, 150)) == (40, 128, 90)


# -- plan_blocks -----------------------------------------------------------------------------


@st.composite
def grids(draw):
    shape = draw(tst.shapes(min_side=1, max_side=30))
    halo = tuple(draw(st.integers(0, 8)) for _ in shape)
    block = draw(tst.block_shapes(shape, halo))
    block = resolve_block(block, shape=shape, halo=halo)
    return shape, block, halo


@st.composite
def rois(draw, shape):
    region = []
    for n in shape:
        start = draw(st.integers(0, n - 1))
        stop = draw(st.integers(start + 1, n))
        region.append(slice(start, stop))
    return tuple(region)


def check_block(b: Block, shape, block, halo) -> None:
    for w, r, n, size, h, i in zip(b.region, b.read, shape, block, halo, b.index, strict=True):
        assert w.start == i * size
        assert w.stop == min(n, w.start + size)
        assert r.start == max(0, w.start - h)
        assert r.stop == min(n, w.stop + h)
    assert b.shape == tuple(w.stop - w.start for w in b.region)
    assert tuple(s.stop - s.start for s in b.inner) == b.shape


@given(grid=grids())
def test_write_regions_partition_the_volume(grid):
    """Every voxel is written by exactly one block."""
    shape, block, halo = grid
    count = np.zeros(shape, dtype=np.int32)
    blocks = plan_blocks(shape, block, halo)
    for b in blocks:
        check_block(b, shape, block, halo)
        count[b.region] += 1
    assert (count == 1).all()
    assert (
        len({b.index for b in blocks})
        == len(blocks)
        == int(np.prod([-(-n // s) for n, s in zip(shape, block, strict=True)]))
    )


@given(data=st.data())
def test_roi_blocks_are_the_grid_blocks_meeting_it(data):
    shape, block, halo = data.draw(grids())
    roi = data.draw(rois(shape))
    full = plan_blocks(shape, block, halo)
    some = plan_blocks(shape, block, halo, roi=roi)
    inside = np.zeros(shape, dtype=bool)
    inside[roi] = True
    expected = [b for b in full if inside[b.region].any()]
    assert some == expected
    count = np.zeros(shape, dtype=np.int32)
    for b in some:
        count[b.region] += 1
    assert count.max() == 1, "a voxel is written at most once"
    assert (count[roi] == 1).all(), "every voxel of the roi is written"


def test_block_properties():
    b = plan_blocks((10, 25, 30), (4, 10, 30), (2, 3, 0))[4]
    assert b.index == (1, 1, 0)
    assert b.region == (slice(4, 8), slice(10, 20), slice(0, 30))
    assert b.read == (slice(2, 10), slice(7, 23), slice(0, 30))
    assert b.inner == (slice(2, 6), slice(3, 13), slice(0, 30))
    assert b.shape == (4, 10, 30)
    assert b.name == "z 4:8, y 10:20, x 0:30"

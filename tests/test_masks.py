"""Masks (--mask, --mask-threshold): blocks without a mask voxel are never read; 0 outside.

Every masked result is compared with the unmasked prediction of one block, cleared outside
the mask; the blocks outside it are shown unread by counting the image's reads.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import yaml
import zarr
from numpy.testing import assert_array_equal
from scipy.ndimage import gaussian_filter

import tiledseg as ts
from tiledseg.blocks import BlockPlan
from tiledseg.cli import main
from tiledseg.errors import InputDataError, OutputExistsError
from tiledseg.features.tiled import NonFiniteValuesError
from tiledseg.masks import MASK_RADIUS, MASK_SIGMA, ThresholdMask
from tiledseg.runs import done_blocks
from tiledseg.volume import Volume, open_volume

ARRAYS = ("labels", "probabilities", "uncertainty")


def read(path, name: str = "labels") -> np.ndarray:
    return zarr.open_group(str(path), mode="r")[f"{name}/0"][...]


class CountedReads:
    """An array that records the region of every read (from any thread)."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.reads: list[tuple[tuple[int, int], ...]] = []
        self._lock = threading.Lock()

    def __getitem__(self, key):
        with self._lock:
            self.reads.append(tuple((s.start, s.stop) for s in key))
        return self.array[key]


def counted(image: np.ndarray) -> tuple[Volume, CountedReads]:
    source = CountedReads(image)
    return Volume(source, None, (1.0,) * image.ndim, "counted"), source


def region_key(region) -> tuple[tuple[int, int], ...]:
    return tuple((s.start, s.stop) for s in region)


@pytest.fixture(scope="module")
def mask3d(phantom3d) -> np.ndarray:
    """A mask of the 3D phantom in one corner, with a hole: most blocks miss it."""
    mask = np.zeros(phantom3d.image.shape, np.uint8)
    mask[:9, :10, :7] = 3
    mask[2:5, 2:5, 2:5] = 0
    return mask


@pytest.fixture(scope="module")
def unmasked(tmp_path_factory, phantom3d, model3d):
    """The unmasked outputs of one block over the whole phantom."""
    out = tmp_path_factory.mktemp("unmasked") / "one.zarr"
    shape = phantom3d.image.shape
    ts.predict(phantom3d.image, model3d, out=out, block=shape, probabilities=True, uncertainty=True)
    return {name: read(out, name) for name in ARRAYS}


def masked_expected(unmasked: dict[str, np.ndarray], inside: np.ndarray) -> dict:
    return {name: np.where(inside, values, 0) for name, values in unmasked.items()}


# -- what is written -------------------------------------------------------------------------


@pytest.mark.parametrize("block", [(20, 22, 18), (7, 8, 6), (9, 6, 13), (13, 22, 7)])
def test_labels_outside_the_mask_are_0_and_inside_those_of_no_mask(
    tmp_path, phantom3d, model3d, mask3d, unmasked, block
):
    np.save(tmp_path / "mask.npy", mask3d)
    result = ts.predict(
        phantom3d.image,
        model3d,
        out=tmp_path / "masked.zarr",
        block=block,
        mask=tmp_path / "mask.npy",
        probabilities=True,
        uncertainty=True,
    )
    expected = masked_expected(unmasked, mask3d != 0)
    for name in ARRAYS:
        assert_array_equal(read(result.path, name), expected[name], err_msg=name)
    plan = BlockPlan(mask3d.shape, block, model3d.halo)
    meeting = [b for b in plan if mask3d[b.region].any()]
    assert (result.blocks, result.masked) == (len(plan), len(plan) - len(meeting))
    assert result.skipped == result.masked
    assert result.voxels == sum(int(np.prod(b.shape)) for b in meeting)


def test_blocks_outside_the_mask_are_never_read(tmp_path, phantom3d, model3d, mask3d, unmasked):
    volume, source = counted(phantom3d.image)
    np.save(tmp_path / "mask.npy", mask3d)
    block = (7, 8, 6)
    result = ts.predict(
        volume, model3d, out=tmp_path / "masked.zarr", block=block, mask=tmp_path / "mask.npy"
    )
    plan = BlockPlan(mask3d.shape, block, model3d.halo)
    inside = {region_key(b.read) for b in plan if mask3d[b.region].any()}
    outside = {region_key(b.read) for b in plan if not mask3d[b.region].any()}
    assert len(inside) == 8
    assert len(outside) == 19
    assert not inside & outside
    # each block meeting the mask is read once, with its halo; no other block is read (their
    # features, computed from that read only, are never computed)
    assert sorted(r for r in source.reads if r in inside) == sorted(inside)
    assert not outside & set(source.reads)
    assert result.masked == 19
    assert_array_equal(read(result.path), masked_expected(unmasked, mask3d != 0)["labels"])


def test_a_mask_from_a_zarr_store_by_the_command(tmp_path, phantom3d, model3d, mask3d, unmasked):
    model = model3d.save(tmp_path / "model.tseg")
    np.save(tmp_path / "image.npy", phantom3d.image)
    zarr.create_array(
        str(tmp_path / "mask.zarr"), shape=mask3d.shape, chunks=(5, 5, 5), dtype="u1"
    )[...] = mask3d
    out = tmp_path / "out.zarr"
    args = ["predict", tmp_path / "image.npy", "--model", model, "--out", out, "--block", "9,6,13"]
    assert main([str(a) for a in [*args, "--mask", tmp_path / "mask.zarr", "--quiet"]]) == 0
    assert_array_equal(read(out), masked_expected(unmasked, mask3d != 0)["labels"])
    provenance = zarr.open_group(str(out), mode="r").attrs["tiledseg"]
    assert provenance["identity"]["mask"] == str((tmp_path / "mask.zarr").resolve())


def test_a_mask_with_a_roi_on_worker_processes(tmp_path, phantom3d, model3d, mask3d, unmasked):
    np.save(tmp_path / "image.npy", phantom3d.image)
    np.save(tmp_path / "mask.npy", mask3d)
    roi = (slice(4, 20), slice(0, 22), slice(0, 10))
    result = ts.predict(
        str(tmp_path / "image.npy"),
        model3d,
        out=tmp_path / "out.zarr",
        block=(7, 8, 6),
        roi="4:20,:,0:10",
        mask=str(tmp_path / "mask.npy"),
        workers=2,
    )
    plan = BlockPlan(mask3d.shape, (7, 8, 6), model3d.halo, roi=roi)
    meeting = [b for b in plan if mask3d[b.region].any()]
    assert (result.blocks, result.masked) == (len(plan), len(plan) - len(meeting))
    expected = np.zeros_like(unmasked["labels"])
    for b in meeting:
        expected[b.region] = np.where(mask3d[b.region] != 0, unmasked["labels"][b.region], 0)
    assert_array_equal(read(result.path), expected)


def test_an_empty_mask_computes_nothing(tmp_path, phantom3d, model3d):
    volume, source = counted(phantom3d.image)
    result = ts.predict(
        volume, model3d, out=tmp_path / "out.zarr", block=8, mask=np.zeros((20, 22, 18), bool)
    )
    assert (result.voxels, result.skipped, result.masked) == (0, 27, 27)
    assert not read(result.path).any()
    assert zarr.open_group(result.path, mode="r").attrs["tiledseg"]["complete"] is True
    assert all(r == ((0, 64),) * 3 for r in source.reads)  # (the intensity check's sample)


# -- mask-threshold --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_air(phantom3d) -> np.ndarray:
    """The 3D phantom beside a box of air (0) as wide again."""
    shape = phantom3d.image.shape
    image = np.zeros((*shape[:2], 22 + shape[2]), phantom3d.image.dtype)
    image[..., 22:] = phantom3d.image
    return image


def smoothed_inside(image: np.ndarray, threshold: float) -> np.ndarray:
    smooth = gaussian_filter(image.astype(np.float64), MASK_SIGMA, mode="reflect", truncate=4.0)
    return smooth > threshold


def test_threshold_mask_is_exact_under_tiling(with_air):
    whole = smoothed_inside(with_air, 20.0)
    assert 0 < whole.sum() < whole.size
    mask = ThresholdMask(open_volume(with_air), 20.0)
    for block in [(7, 5, 9), (20, 22, 40), (3, 11, 4)]:
        got = np.zeros_like(whole)
        for b in BlockPlan(with_air.shape, block, (0, 0, 0)):
            got[b.region] = mask.inside(b.region)
        assert_array_equal(got, whole)


def test_threshold_skips_the_air_blocks_and_clears_the_air(tmp_path, with_air, model3d):
    one = ts.predict(
        with_air,
        model3d,
        out=tmp_path / "one.zarr",
        block=with_air.shape,
        probabilities=True,
        uncertainty=True,
    )
    unmasked = {name: read(one.path, name) for name in ARRAYS}
    expected = masked_expected(unmasked, smoothed_inside(with_air, 20.0))
    block = (7, 8, 8)
    volume, source = counted(with_air)
    result = ts.predict(
        volume,
        model3d,
        out=tmp_path / "masked.zarr",
        block=block,
        mask_threshold=20,
        probabilities=True,
        uncertainty=True,
    )
    for name in ARRAYS:
        assert_array_equal(read(result.path, name), expected[name], err_msg=name)
    plan = BlockPlan(with_air.shape, block, model3d.halo)
    air = [b for b in plan if b.region[2].stop + MASK_RADIUS <= 22]
    assert air
    assert result.masked >= len(air)
    # their smoothed image is read (with its own halo), never their features' read region
    features_reads = {region_key(b.read) for b in air}
    assert not features_reads & set(source.reads)
    assert result.voxels < with_air.size


# -- resume, identity ------------------------------------------------------------------------


def test_a_masked_run_resumes_and_another_mask_is_another_run(
    tmp_path, phantom3d, model3d, mask3d, capsys
):
    model = model3d.save(tmp_path / "model.tseg")
    image = phantom3d.image.astype(np.float32)
    image[1, 1, 1] = np.nan  # in a block meeting the mask: its blocks fail, the rest is written
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "mask.npy", mask3d)
    np.save(tmp_path / "other.npy", np.flip(mask3d, axis=0))
    base = ["predict", tmp_path / "image.npy", "--model", model, "--block", "7,8,6", "--quiet"]
    masked = [*base, "--mask", tmp_path / "mask.npy"]
    out = tmp_path / "out.zarr"
    args = [str(a) for a in [*masked, "--out", out]]
    with pytest.raises(NonFiniteValuesError):
        ts.predict(
            str(tmp_path / "image.npy"), model, out=out, block="7,8,6", mask=tmp_path / "mask.npy"
        )
    done = done_blocks(out)
    assert 0 < len(done) < 8
    # another mask, or none, is another run
    for other in (["--mask", tmp_path / "other.npy"], [], ["--mask-threshold", 5]):
        capsys.readouterr()
        assert main([str(a) for a in [*base, *other, "--out", out, "--nan-fill", 0]]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1, err
        assert "different mask" in err
    assert done_blocks(out) == done
    capsys.readouterr()
    assert main([*args, "--nan-fill", "0"]) == 0
    resumed = zarr.open_group(str(out), mode="r").attrs["tiledseg"]["resumed"][-1]
    assert (resumed["skipped"], resumed["blocks"]) == (len(done) + 19, 27)
    whole = tmp_path / "whole.zarr"
    assert main([str(a) for a in [*masked, "--out", whole, "--nan-fill", 0]]) == 0
    assert_array_equal(read(out), read(whole))
    assert not read(out)[mask3d == 0].any()
    # with --overwrite another mask replaces the run
    again = [*base, "--mask", tmp_path / "other.npy", "--out", out, "--overwrite"]
    assert main([str(a) for a in [*again, "--nan-fill", 0]]) == 0
    assert not read(out)[np.flip(mask3d, axis=0) == 0].any()


def test_segment_takes_a_mask_from_its_config(tmp_path, phantom3d, mask3d):
    np.save(tmp_path / "image.npy", phantom3d.image)
    np.save(tmp_path / "labels.npy", phantom3d.scribbles)
    np.save(tmp_path / "mask.npy", mask3d)
    config = {
        "image": str(tmp_path / "image.npy"),
        "labels": str(tmp_path / "labels.npy"),
        "model": str(tmp_path / "model.tseg"),
        "out": str(tmp_path / "out.zarr"),
        "features": "minimal",
        "block": 12,
        "mask": str(tmp_path / "mask.npy"),
        "quiet": True,
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result = ts.segment(tmp_path / "run.yaml")
    labels = read(result.prediction.path)
    assert not labels[mask3d == 0].any()
    assert labels[mask3d != 0].all()
    assert result.prediction.masked == 8 - 1  # only block (0, 0, 0) meets it


# -- bad input -------------------------------------------------------------------------------


def one_line_error(capsys, args) -> str:
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_masks_are_one_line(tmp_path, phantom3d, model3d, capsys):
    model = model3d.save(tmp_path / "model.tseg")
    np.save(tmp_path / "image.npy", phantom3d.image)
    np.save(tmp_path / "small.npy", np.ones((20, 22, 17), np.uint8))
    np.save(tmp_path / "channels.npy", np.ones((20, 22, 18, 2), np.uint8))
    out = tmp_path / "out.zarr"
    base = ["predict", tmp_path / "image.npy", "--model", model, "--out", out, "--quiet"]
    err = one_line_error(capsys, [*base, "--mask", tmp_path / "small.npy"])
    assert "has shape (20, 22, 17) but image" in err
    err = one_line_error(capsys, [*base, "--mask", tmp_path / "small.npy", "--mask-threshold", 3])
    assert "--mask and --mask-threshold exclude each other" in err
    err = one_line_error(capsys, [*base, "--mask-threshold", 3, "--smooth", "graphcut"])
    assert "--mask-threshold with --smooth graphcut is not supported yet" in err
    err = one_line_error(capsys, [*base, "--mask", tmp_path / "nowhere.npy"])
    assert "nowhere.npy" in err
    one_line_error(capsys, [*base, "--mask", tmp_path / "channels.npy"])
    one_line_error(capsys, [*base, "--mask-threshold", "nan"])
    assert not out.exists()
    with pytest.raises(InputDataError, match="must match"):
        ts.predict(phantom3d.image, model3d, out=out, mask=np.ones((3, 3, 3)))


def test_a_mask_given_as_a_path_is_never_overwritten(tmp_path, phantom3d, model3d, mask3d):
    np.save(tmp_path / "image.npy", phantom3d.image)
    zarr.create_array(str(tmp_path / "mask.zarr"), shape=mask3d.shape, dtype="u1")[...] = mask3d
    with pytest.raises(OutputExistsError, match="is one of the inputs"):
        ts.predict(
            str(tmp_path / "image.npy"),
            model3d,
            out=tmp_path / "mask.zarr",
            mask=tmp_path / "mask.zarr",
            overwrite=True,
        )
    assert_array_equal(zarr.open_array(str(tmp_path / "mask.zarr"))[...], mask3d)


# -- the plan --------------------------------------------------------------------------------


def test_a_plan_keeps_only_the_blocks_asked_for():
    plan = BlockPlan((10, 9), (4, 4), (1, 1), roi=(slice(0, 10), slice(5, 9)))
    keep = np.zeros(plan.grid, dtype=bool)
    keep[0, :] = keep[2, 2] = True
    kept = plan.only(keep)
    assert plan.grid == (3, 3)
    assert [b.index for b in kept] == [(0, 1), (0, 2), (2, 2)]
    assert len(kept) == 3
    assert (0, 1) in kept
    assert (1, 1) not in kept
    assert (0, 0) not in kept
    assert len(plan) == 6  # (the plan itself is unchanged)

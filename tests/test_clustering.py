"""``tiledseg cluster``: k-means phases without scribbles, exact under any tiling.

The phases are fitted on seeded windows that do not depend on the block, and every
voxel is labelled by its nearest centre with a per-voxel sum in a fixed order: any
blocking must give the same labels, bit for bit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import zarr
from sklearn.metrics import adjusted_rand_score

import tiledseg as ts
from tiledseg.blocks import Block
from tiledseg.cli import main
from tiledseg.clustering import (
    NearestCentre,
    check_classes,
    cluster_phases,
    fit_centres,
    sample_windows,
)
from tiledseg.errors import BlocksFailedError, OutputExistsError, TiledsegError

# the module, not the function that tiledseg exports under its name
from tiledseg.predict import PredictionJob
from tiledseg.runs import done_blocks
from tiledseg.testing import make_phantom

SHAPE_2D = (150, 170)
SHAPE_3D = (30, 62, 58)
# (the 2D default bank's halo is 53)
BLOCKS = {2: (57, 61), 3: (13, 29, 31)}


def labels_of(out: Path) -> np.ndarray:
    return zarr.open_group(str(out), mode="r")["labels/0"][...]


def provenance(out: Path) -> dict:
    return dict(zarr.open_group(str(out), mode="r").attrs["tiledseg"])


@pytest.fixture(scope="module")
def phantoms():
    return {
        2: make_phantom(SHAPE_2D, n_classes=3, feature_size=8.0, seed=11),
        3: make_phantom(SHAPE_3D, n_classes=3, feature_size=6.0, seed=12),
    }


@pytest.mark.parametrize("ndim", [2, 3])
def test_tiled_equals_untiled(tmp_path, phantoms, ndim):
    image = phantoms[ndim].image
    whole = cluster_phases(image, classes=3, out=tmp_path / "whole.zarr", block=image.shape)
    tiled = cluster_phases(image, classes=3, out=tmp_path / "tiled.zarr", block=BLOCKS[ndim])
    assert whole.blocks == 1
    assert tiled.blocks > 8  # uneven blocks, with partial ones at the far edges
    assert whole.phases == tiled.phases
    a, b = labels_of(tmp_path / "whole.zarr"), labels_of(tmp_path / "tiled.zarr")
    assert a.dtype == np.uint8
    assert set(np.unique(a)) == {1, 2, 3}
    np.testing.assert_array_equal(a, b)
    # the same model (centres, scaling, bank, spacing): the same checksum
    assert (
        provenance(tmp_path / "whole.zarr")["model_checksum"]
        == provenance(tmp_path / "tiled.zarr")["model_checksum"]
    )


def test_windows_do_not_depend_on_the_block_and_cover_the_image():
    shape = (300, 500)
    windows = sample_windows(shape, sample_voxels=100_000, seed=3)
    assert windows == sample_windows(shape, sample_voxels=100_000, seed=3)
    assert windows != sample_windows(shape, sample_voxels=100_000, seed=4)
    assert len(windows) == 8  # 100k voxels need 7 windows of 128 x 128; at least 8
    for region in windows:
        assert [s.stop - s.start for s in region] == [128, 128]
        assert all(0 <= s.start and s.stop <= n for s, n in zip(region, shape, strict=True))
    # a small image is one window, itself
    assert sample_windows((20, 30, 40), sample_voxels=10, seed=0) == [
        (slice(0, 20), slice(0, 30), slice(0, 40))
    ]


@pytest.mark.parametrize("shape", [(120, 120), (36, 48, 48)], ids=["2d", "3d"])
def test_two_phases_are_found(tmp_path, shape):
    ph = make_phantom(shape, n_classes=2, feature_size=10.0, noise=0.3, seed=5)
    block = 64 if len(shape) == 2 else 32
    result = cluster_phases(ph.image, classes=2, out=tmp_path / "out.zarr", block=block)
    labels = labels_of(tmp_path / "out.zarr")
    assert adjusted_rand_score(ph.truth.ravel(), labels.ravel()) > 0.9
    # the phantom's phase 1 is the darker: label 1 is the darkest phase
    assert (labels == ph.truth).mean() > 0.95
    assert [p["label"] for p in result.phases] == [1, 2]
    assert result.phases[0]["level"] < result.phases[1]["level"]
    assert sum(p["sample_share"] for p in result.phases) == pytest.approx(1.0, abs=1e-3)


def test_labels_are_ordered_darkest_first(tmp_path, phantoms):
    image = phantoms[2].image
    for name, picture in (("image", image), ("inverted", 255 - image)):
        out = tmp_path / f"{name}.zarr"
        cluster_phases(picture, classes=3, out=out)
        labels = labels_of(out)
        means = [picture[labels == k].mean() for k in (1, 2, 3)]
        assert means == sorted(means), (name, means)


def test_nearest_centre_is_the_same_for_any_number_of_rows():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5000, 7)).astype(np.float32)
    clf = fit_centres(X, classes=4, seed=0)
    whole = clf.nearest(X)
    parts = np.concatenate([clf.nearest(X[i : i + 37]) for i in range(0, len(X), 37)])
    np.testing.assert_array_equal(whole, parts)
    # the nearest centre by a float64 computation, but at near-ties
    z = (X.astype(np.float64) - clf.mean) / clf.scale
    d = ((z[:, None, :] - clf.centres[None].astype(np.float64)) ** 2).sum(axis=2)
    assert (whole == d.argmin(axis=1)).mean() > 0.999
    proba = clf.predict_proba(X[:10])
    assert proba.dtype == np.float32
    np.testing.assert_array_equal(proba.argmax(axis=1), whole[:10])
    np.testing.assert_array_equal(proba.sum(axis=1), 1)


def test_nearest_centre_on_the_device(xp, device, tmp_path, phantoms):
    """cupy gives the numpy labels of the same features; on the GPU's own features, the
    CPU's labels but at near-ties (float32 rounding in the filters)."""
    from tiledseg.arrays import to_host

    rng = np.random.default_rng(1)
    X = rng.standard_normal((3000, 5)).astype(np.float32)
    clf = fit_centres(X, classes=3, seed=0)
    on_device = clf.nearest(xp.asarray(X))
    assert type(on_device) is type(xp.asarray(X))
    np.testing.assert_array_equal(to_host(on_device), clf.nearest(X))
    image = phantoms[2].image
    cluster_phases(image, classes=3, out=tmp_path / "cpu.zarr", block=64)
    cluster_phases(image, classes=3, out=tmp_path / "dev.zarr", block=64, device=device)
    same = labels_of(tmp_path / "cpu.zarr") == labels_of(tmp_path / "dev.zarr")
    assert same.mean() > 0.999


def test_a_clustering_model_is_not_saved_or_trained(tmp_path, phantoms):
    clf = NearestCentre(np.zeros((2, 3)), np.zeros(3), np.ones(3))
    with pytest.raises(TiledsegError, match="not saved"):
        clf.to_bytes()
    with pytest.raises(TiledsegError, match="not trained on labels"):
        clf.fit(np.zeros((4, 3), np.float32), np.zeros(4), n_threads=1)


@pytest.mark.parametrize("value", [1, 0, -2, "1", "x", "2.5", "", True, 2.0])
def test_check_classes_refuses(value):
    with pytest.raises(TiledsegError, match=r"--classes .*2 or more"):
        check_classes(value)


def test_check_classes_accepts():
    assert check_classes(3) == 3
    assert check_classes(" 4 ") == 4
    assert check_classes(np.int64(2)) == 2


def test_fewer_distinct_rows_than_classes():
    table = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)
    with pytest.raises(TiledsegError, match="only 3 distinct .* give --classes 3 or fewer"):
        fit_centres(table, classes=5, seed=0)


# -- the command line -------------------------------------------------------------------


@pytest.fixture
def work(tmp_path, monkeypatch, phantoms):
    folder = tmp_path / "work"
    folder.mkdir()
    np.save(folder / "image.npy", phantoms[3].image)
    monkeypatch.chdir(folder)
    return folder


CLUSTER = ["cluster", "image.npy", "--classes", "3", "--out", "out.zarr", "--quiet"]


def snapshot(root: Path) -> dict[str, object]:
    """Every path under ``root`` with its content digest."""
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).digest()
        for p in sorted(root.rglob("*"))
    }


def refused(capsys, args: list[str], *needles: str) -> str:
    """``main(args)`` exits 2 with one line on stderr holding ``needles``, changing nothing."""
    capsys.readouterr()
    before = snapshot(Path.cwd())
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("tiledseg: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert snapshot(Path.cwd()) == before
    return lines[0]


def test_cli_end_to_end(work, capsys, phantoms):
    assert main([*CLUSTER, "--block", "16,32,32", "--sample-voxels", "20000"]) == 0
    out = capsys.readouterr().out
    assert "phases (share of the sampled voxels, smoothed intensity): 1: " in out
    assert f"{np.prod(SHAPE_3D):,} voxels in 8 blocks" in out
    assert "written to out.zarr" in out
    labels = labels_of(work / "out.zarr")
    assert labels.shape == SHAPE_3D
    assert set(np.unique(labels)) == {1, 2, 3}
    info = provenance(work / "out.zarr")
    assert info["complete"] is True
    assert info["command"].startswith("tiledseg cluster image.npy --classes 3")
    assert info["clustering"]["classes"] == 3
    assert info["clustering"]["sample_voxels"] == 20000
    assert info["clustering"]["ordered_by"].startswith("gaussian_smoothing(sigma=0.7")
    # the same as the API with the same options
    api = work / "api.zarr"
    ts.cluster_phases("image.npy", classes=3, out=api, sample_voxels=20000)
    np.testing.assert_array_equal(labels_of(api), labels)
    assert main(["info", "out.zarr"]) == 0
    assert "tiledseg cluster image.npy" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "needle"),
    [("1", "--classes '1'"), ("0", "--classes '0'"), ("x", "--classes 'x'"), ("-1", "'-1'")],
)
def test_cli_bad_classes(work, capsys, value, needle):
    args = [a if a != "3" else value for a in CLUSTER]
    line = refused(capsys, args, needle, "2 or more")
    assert not (work / "out.zarr").exists()
    assert "Usage" not in line


def test_cli_more_classes_than_the_image_has(work, capsys):
    np.save("flat.npy", np.full((40, 50), 7, dtype=np.uint8))
    args = ["cluster", "flat.npy", "--classes", "2", "--out", "out.zarr", "--quiet"]
    refused(capsys, args, "--classes 2", "same features")


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--sample-voxels", "0", "--sample-voxels 0"),
        ("--block", "4", "smaller than the halo"),
        ("--features", "nosuch", "features 'nosuch'"),
        ("--spacing", "1,x,1", "spacing '1,x,1'"),
        ("--seed", "-1", "--seed -1"),
        ("--out", "no/such.zarr", "folder of output 'no/such.zarr' does not exist"),
    ],
)
def test_cli_bad_options(work, capsys, option, value, needle):
    refused(capsys, [*CLUSTER, option, value], needle)


def test_cli_existing_output_is_refused_without_overwrite(work, capsys):
    assert main([*CLUSTER, "--sample-voxels", "5000"]) == 0
    first = labels_of(work / "out.zarr")
    refused(capsys, [*CLUSTER, "--sample-voxels", "5000"], "exists and is complete", "--overwrite")
    assert main([*CLUSTER, "--sample-voxels", "5000", "--overwrite", "--seed", "1"]) == 0
    assert provenance(work / "out.zarr")["clustering"]["seed"] == 1
    assert labels_of(work / "out.zarr").shape == first.shape


def test_an_unfinished_run_resumes(work, monkeypatch):
    real = PredictionJob.predict

    def failing(job, block):
        assert isinstance(block, Block)
        if block.index[0] == 1:
            raise OSError("disk full (on purpose)")
        return real(job, block)

    options = {"classes": 3, "out": "out.zarr", "block": 16, "sample_voxels": 5000}
    with monkeypatch.context() as patch:
        patch.setattr(PredictionJob, "predict", failing)
        with pytest.raises(BlocksFailedError):
            cluster_phases("image.npy", **options)
    assert provenance(work / "out.zarr")["complete"] is False
    assert len(done_blocks(work / "out.zarr")) == 16
    result = cluster_phases("image.npy", **options)
    assert (result.blocks, result.skipped) == (32, 16)
    assert "clustering" in provenance(work / "out.zarr")
    cluster_phases("image.npy", **{**options, "out": "again.zarr"})
    np.testing.assert_array_equal(labels_of(work / "out.zarr"), labels_of(work / "again.zarr"))
    # another seed gives another model: its run does not continue this one
    with monkeypatch.context() as patch:
        patch.setattr(PredictionJob, "predict", failing)
        with pytest.raises(BlocksFailedError):
            cluster_phases("image.npy", **{**options, "out": "third.zarr"})
    with pytest.raises(OutputExistsError, match="different model"):
        cluster_phases("image.npy", **{**options, "out": "third.zarr", "seed": 1})

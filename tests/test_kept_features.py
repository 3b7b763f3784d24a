"""``segment`` keeps the features training computed of blocks full of scribbles, and its
prediction loads them: the same labels as computing them again, nothing left behind."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml
import zarr
from click.testing import CliRunner
from conftest import SMALL_BANK

import tiledseg as ts
from tiledseg import kept_features
from tiledseg.cli import cli
from tiledseg.errors import TiledsegError
from tiledseg.features.bank import resolve_bank
from tiledseg.testing import make_phantom

BLOCK = (14, 20, 18)  # uneven against the 40 x 44 x 38 volume


@pytest.fixture(scope="module")
def balls():
    """Scribbles everywhere: single voxels of the truth, 1% of the volume, in every block."""
    ph = make_phantom((40, 44, 38), n_classes=3, scribbles="balls", seed=2)
    rng = np.random.default_rng(2)
    scribbles = np.where(rng.random(ph.truth.shape) < 0.01, ph.truth, 0).astype(np.uint8)
    return dataclasses.replace(ph, scribbles=scribbles)


def labels_of(path) -> np.ndarray:
    return zarr.open_array(f"{path}/labels/0")[...]


@pytest.fixture
def loads(monkeypatch):
    """Whether each load of a kept stack found one (the real load, counted)."""
    found: list[bool] = []
    real_load = kept_features.KeptFeatures.load

    def counting_load(self, block, n_features):
        stack = real_load(self, block, n_features)
        found.append(stack is not None)
        return stack

    monkeypatch.setattr(kept_features.KeptFeatures, "load", counting_load)
    return found


def test_training_keeps_full_blocks_and_prediction_gives_the_same_labels(balls, tmp_path, loads):
    out = tmp_path / "kept.zarr"
    with kept_features.using(out) as scratch:
        model = ts.train(
            balls.image, balls.scribbles, features=SMALL_BANK, block=BLOCK, cache_dir=None
        )
        kept = sorted(scratch.folder.glob("*.npy"))
        assert kept, "no block was kept although scribbles fill every block"
        assert scratch.kept is not None
        ts.predict(balls.image, model, out=out, block=BLOCK)
        assert scratch.folder.is_dir()
    assert sum(loads) == len(kept)  # every kept block was read back, once
    assert not scratch.folder.exists()  # removed on leaving
    plain = ts.predict(balls.image, model, out=tmp_path / "plain.zarr", block=BLOCK)
    assert len(kept) <= plain.blocks
    np.testing.assert_array_equal(labels_of(out), labels_of(tmp_path / "plain.zarr"))
    # the model is the one training without keeping gives (the same rows, C order)
    again = ts.train(balls.image, balls.scribbles, features=SMALL_BANK, block=BLOCK, cache_dir=None)
    assert again.checksum == model.checksum


def test_a_kept_stack_is_what_prediction_would_compute(balls, tmp_path):
    from tiledseg.blocks import haloed, plan_blocks
    from tiledseg.features.tiled import features_of_block
    from tiledseg.predict import block_probabilities
    from tiledseg.volume import open_volume

    out = tmp_path / "k.zarr"
    with kept_features.using(out) as scratch:
        model = ts.train(
            balls.image, balls.scribbles, features=SMALL_BANK, block=BLOCK, cache_dir=None
        )
        volume = open_volume(balls.image)
        halo = model.bank.halo(volume.spacing)
        n = model.bank.n_features(ndim=3, n_channels=1)
        found = 0
        for block in plan_blocks(volume.shape, BLOCK, halo):
            stack = scratch.kept.load(block, n)
            if stack is None:
                continue
            found += 1
            assert block.read == haloed(block.region, halo, volume.shape)
            expected = features_of_block(volume, block, bank=model.bank, spacing=volume.spacing)
            np.testing.assert_array_equal(stack, expected)
            np.testing.assert_array_equal(
                block_probabilities(volume, block, model, kept=scratch.kept),
                block_probabilities(volume, block, model),
            )
        assert found > 0


def test_strokes_on_a_few_planes_keep_nothing(tmp_path):
    ph = make_phantom((40, 44, 38), n_classes=3, scribbles="strokes", seed=2)
    with kept_features.using(tmp_path / "s.zarr") as scratch:
        ts.train(ph.image, ph.scribbles, features=SMALL_BANK, block=BLOCK, cache_dir=None)
        assert list(scratch.folder.glob("*.npy")) == []


def test_the_budget_bounds_what_is_kept(balls, tmp_path, monkeypatch):
    monkeypatch.setenv("TILEDSEG_KEPT_FEATURES_BYTES", "0")
    with kept_features.using(tmp_path / "none.zarr") as scratch:
        ts.train(balls.image, balls.scribbles, features=SMALL_BANK, block=BLOCK, cache_dir=None)
        assert scratch.kept is None
        assert not scratch.folder.exists()
    bank = resolve_bank(SMALL_BANK, ndim=3)
    one_block = 4 * bank.n_features(ndim=3, n_channels=1) * int(np.prod(BLOCK))
    monkeypatch.setenv("TILEDSEG_KEPT_FEATURES_BYTES", str(2 * one_block))
    with kept_features.using(tmp_path / "two.zarr") as scratch:
        ts.train(balls.image, balls.scribbles, features=SMALL_BANK, block=BLOCK, cache_dir=None)
        assert 0 < len(list(scratch.folder.glob("*.npy"))) <= 2
    monkeypatch.setenv("TILEDSEG_KEPT_FEATURES_BYTES", "lots")
    with kept_features.using(tmp_path / "bad.zarr"):
        with pytest.raises(TiledsegError, match="TILEDSEG_KEPT_FEATURES_BYTES='lots'"):
            ts.train(balls.image, balls.scribbles, features=SMALL_BANK, block=BLOCK, cache_dir=None)


def test_a_damaged_kept_stack_is_computed_again(balls, tmp_path, loads):
    out = tmp_path / "d.zarr"
    with kept_features.using(out) as scratch:
        model = ts.train(
            balls.image, balls.scribbles, features=SMALL_BANK, block=BLOCK, cache_dir=None
        )
        damaged = list(scratch.folder.glob("*.npy"))
        for path in damaged:
            path.write_bytes(b"not a stack")
        ts.predict(balls.image, model, out=out, block=BLOCK)
    assert damaged
    assert len(loads) >= len(damaged)
    assert not any(loads)
    ts.predict(balls.image, model, out=tmp_path / "plain.zarr", block=BLOCK)
    np.testing.assert_array_equal(labels_of(out), labels_of(tmp_path / "plain.zarr"))


def test_models_and_images_the_stacks_do_not_serve(balls, tmp_path, loads):
    from tiledseg.volume import open_volume

    # autocontext stages compute their own features: nothing is kept or loaded
    with kept_features.using(tmp_path / "a.zarr") as scratch:
        model = ts.train(
            balls.image, balls.scribbles, features=SMALL_BANK, block=BLOCK, stages=2, cache_dir=None
        )
        assert scratch.kept is None
        ts.predict(balls.image, model, out=tmp_path / "a.zarr", block=BLOCK)
    assert loads == []
    # the stacks of one image never serve another of the same shape, nor another bank
    with kept_features.using(tmp_path / "b.zarr") as scratch:
        model = ts.train(
            balls.image, balls.scribbles, features=SMALL_BANK, block=BLOCK, cache_dir=None
        )
        kept = scratch.kept
        assert kept.serves(model, open_volume(balls.image))
        assert not kept.serves(model, open_volume(255 - balls.image))
        other = ts.train(
            balls.image, balls.scribbles, features="minimal", block=BLOCK, cache_dir=None
        )
        assert not kept.serves(other, open_volume(balls.image))


def test_segment_keeps_and_removes_its_scratch_folder(balls, tmp_path, monkeypatch, loads):
    monkeypatch.setenv("TILEDSEG_CACHE_DIR", str(tmp_path / "cache"))  # an empty table cache
    np.save(tmp_path / "image.npy", balls.image)
    np.save(tmp_path / "labels.npy", balls.scribbles)
    config = {
        "image": str(tmp_path / "image.npy"),
        "labels": str(tmp_path / "labels.npy"),
        "model": str(tmp_path / "model.tsm"),
        "out": str(tmp_path / "seg.zarr"),
        "features": SMALL_BANK.to_dict(),
        "block": list(BLOCK),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["segment", str(tmp_path / "c.yaml"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert any(loads), "segment's prediction loaded no kept block"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    model = ts.load_model(tmp_path / "model.tsm")
    ts.predict(balls.image, model, out=tmp_path / "plain.zarr", block=BLOCK)
    np.testing.assert_array_equal(
        labels_of(tmp_path / "seg.zarr"), labels_of(tmp_path / "plain.zarr")
    )

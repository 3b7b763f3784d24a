"""A collection of images predicted in one run (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import tiledseg as ts
from tiledseg.cli import main
from tiledseg.testing import make_phantom


@pytest.fixture(scope="module")
def model():
    ph = make_phantom((24, 28, 20), n_classes=3, seed=3, scribble_fraction=0.01)
    return ts.train(ph.image, ph.scribbles, features="minimal", cache_dir=None)


def labels(path):
    return zarr.open_array(path / "labels" / "0", mode="r")[:]


def test_a_collection_with_a_failing_image(model, tmp_path, capsys):
    for i, seed in enumerate((4, 5)):
        np.save(tmp_path / f"img{i}.npy", make_phantom((24, 28, 20), seed=seed).image)
    np.save(tmp_path / "flat.npy", np.zeros((24, 28), np.uint8))  # 2D: the model is 3D
    model_path = model.save(tmp_path / "m.tseg")
    (tmp_path / "out").mkdir()
    images = [str(tmp_path / n) for n in ("img0.npy", "flat.npy", "img1.npy")]
    args = ["predict", *images, "--model", str(model_path), "--out-dir", str(tmp_path / "out")]
    assert main([*args, "--quiet", "--block", "12"]) == 1
    captured = capsys.readouterr()
    assert "flat.npy: FAILED: image" in captured.out
    assert "2 spatial axes" in captured.out
    assert "1 of 3 images failed" in captured.err
    for i in range(2):
        single = ts.predict(images[2 * i], model, out=tmp_path / f"single{i}.zarr", block=12)
        np.testing.assert_array_equal(
            labels(tmp_path / "out" / f"img{i}.zarr"), labels(tmp_path / f"single{i}.zarr")
        )
        assert single.blocks == 12
    assert not (tmp_path / "out" / "flat.zarr").exists()
    # the same command again: the written images are complete, the failing one still fails
    assert main([*args, "--quiet", "--block", "12"]) == 1


def test_a_glob_in_python_and_one_output_per_stem(model, tmp_path):
    for i in range(3):
        np.save(tmp_path / f"tile{i}.npy", make_phantom((16, 20, 16), seed=i).image)
    (tmp_path / "out").mkdir()
    result = ts.predict_collection(str(tmp_path / "tile*.npy"), model, out_dir=tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "tile0.zarr",
        "tile1.zarr",
        "tile2.zarr",
    ]
    assert not result.failed
    assert all(r.voxels == 16 * 20 * 16 for r in result.results.values())


def test_out_and_out_dir_are_one_or_the_other(model, tmp_path, capsys):
    model_path = model.save(tmp_path / "m.tseg")
    np.save(tmp_path / "a.npy", make_phantom((16, 20, 16), seed=1).image)
    args = ["predict", str(tmp_path / "a.npy"), "--model", str(model_path)]
    assert main(args) == 2
    assert main([*args, "--out", "x.zarr", "--out-dir", str(tmp_path)]) == 2
    assert (
        main([str(a) for a in [*args[:2], tmp_path / "a.npy", *args[2:], "--out", "x.zarr"]]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("give --out OUT.zarr (one image) or --out-dir DIR") == 2
    assert "images: give --out-dir DIR, not --out" in err


@pytest.mark.slow
def test_a_collection_on_worker_processes_equals_threads(model, tmp_path):
    for i in range(2):
        np.save(tmp_path / f"t{i}.npy", make_phantom((16, 20, 16), seed=10 + i).image)
    for run, workers in (("threads", None), ("workers", 2)):
        (tmp_path / run).mkdir()
        result = ts.predict_collection(
            str(tmp_path / "t*.npy"), model, out_dir=tmp_path / run, workers=workers, block=12
        )
        assert not result.failed
    for i in range(2):
        np.testing.assert_array_equal(
            labels(tmp_path / "threads" / f"t{i}.zarr"), labels(tmp_path / "workers" / f"t{i}.zarr")
        )


def test_a_config_predicts_more_images_into_out_dir(tmp_path, capsys):
    ph = make_phantom((20, 24, 18), n_classes=3, seed=6, scribble_fraction=0.02)
    np.save(tmp_path / "image.npy", ph.image)
    np.save(tmp_path / "labels.npy", ph.scribbles)
    (tmp_path / "tiles").mkdir()
    for i in range(2):
        np.save(tmp_path / "tiles" / f"t{i}.npy", make_phantom((20, 24, 18), seed=30 + i).image)
    np.save(tmp_path / "tiles" / "t2.npy", np.zeros((20, 24), np.float32))  # 2D: fails
    (tmp_path / "more").mkdir()
    config = tmp_path / "run.yaml"
    config.write_text(
        "image: image.npy\nlabels: labels.npy\nmodel: m.tseg\nout: out.zarr\n"
        "features: minimal\nblock: 12\npredict_images: tiles/t*.npy\nout_dir: more\n"
    )
    assert main(["segment", str(config), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "t2.npy: FAILED: image" in captured.out
    assert "1 of 3 images failed" in captured.err
    model = ts.load_model(tmp_path / "m.tseg")
    for i in range(2):
        single = tmp_path / f"single{i}.zarr"
        ts.predict(tmp_path / "tiles" / f"t{i}.npy", model, out=single, block=12)
        np.testing.assert_array_equal(labels(tmp_path / "more" / f"t{i}.zarr"), labels(single))
    assert labels(tmp_path / "out.zarr").shape == (20, 24, 18)
    # the same config again, the bad tile fixed: training and out are skipped (the model
    # file made out), the tiles done are skipped, the fixed one is predicted
    np.save(tmp_path / "tiles" / "t2.npy", make_phantom((20, 24, 18), seed=32).image)
    stamp = (tmp_path / "m.tseg").stat().st_mtime_ns
    assert main(["segment", str(config), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "training and its prediction skipped, what follows them continued" in printed
    assert printed.count("complete already") == 2
    assert (tmp_path / "m.tseg").stat().st_mtime_ns == stamp
    single = tmp_path / "single2.zarr"
    ts.predict(tmp_path / "tiles" / "t2.npy", model, out=single, block=12)
    np.testing.assert_array_equal(labels(tmp_path / "more" / "t2.zarr"), labels(single))


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("predict_images: [a.npy]\n", "predict_images and out_dir go together"),
        ("out_dir: more\n", "predict_images and out_dir go together"),
        ("predict_images: [a.npy]\nout_dir: more\nmask: a.npy\n", "mask belongs to image alone"),
        ("predict_images: [none*.npy]\nout_dir: .\n", "no image matches"),
        ("predict_images: [a.npy]\nout_dir: missing\n", "out_dir "),
        ("predict_images: [out.npy]\nout_dir: .\n", "is also the output of one of"),
    ],
)
def test_a_bad_collection_in_a_config_is_one_line_before_training(tmp_path, capsys, extra, says):
    ph = make_phantom((16, 16), n_classes=2, seed=1)
    for name in ("a.npy", "out.npy"):
        np.save(tmp_path / name, ph.image)
    np.save(tmp_path / "labels.npy", ph.scribbles)
    config = tmp_path / "run.yaml"
    config.write_text(
        "image: a.npy\nlabels: labels.npy\nmodel: m.tseg\nout: out.zarr\nfeatures: minimal\n"
        + extra
    )
    assert main(["segment", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m.tseg").exists()

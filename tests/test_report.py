"""``tiledseg report``: the HTML page, its PNG panels and manifest, and its refusals."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import tiledseg as ts
from tiledseg.classifiers import XGBoostClassifier
from tiledseg.cli import cli, main
from tiledseg.report import class_colours, label_rgba, make_report, middle_views, read_view
from tiledseg.volume import open_volume

PIL = pytest.importorskip("PIL.Image")


def run_ok(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    if result.exit_code != 0:
        raise AssertionError(
            f"tiledseg {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}"
        ) from result.exception
    return result.stdout


def _prediction(folder: Path, phantom, bank, *, uncertainty: bool, image_as_array: bool = False):
    """Save the phantom's image and truth, train a small model, predict OUT.zarr."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "image.npy", phantom.image)
    np.save(folder / "truth.npy", phantom.truth)
    model = ts.train(
        phantom.image,
        phantom.scribbles,
        features=bank,
        classifier=XGBoostClassifier(max_rounds=15, patience=3, max_depth=3, seed=0),
        cache_dir=None,
    )
    model.save(folder / "model.tseg")
    image = phantom.image if image_as_array else str(folder / "image.npy")
    out = folder / "out.zarr"
    ts.predict(image, folder / "model.tseg", out=out, uncertainty=uncertainty, quiet=True)
    return out


@pytest.fixture(scope="module")
def run3d(tmp_path_factory, phantom3d, small_bank):
    return _prediction(
        tmp_path_factory.mktemp("r3d") / "run", phantom3d, small_bank, uncertainty=True
    )


@pytest.fixture(scope="module")
def run2d(tmp_path_factory, phantom2d, small_bank):
    return _prediction(
        tmp_path_factory.mktemp("r2d") / "run",
        phantom2d,
        small_bank,
        uncertainty=False,
        image_as_array=True,
    )


def _manifest(html: Path) -> dict:
    return json.loads((html.with_name(f"{html.stem}_files") / "manifest.json").read_text())


def _pixels(path: Path) -> np.ndarray:
    with PIL.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def _check_pictures(html: Path, manifest: dict) -> None:
    """Every panel is a non-blank PNG of the recorded size that the page shows."""
    page = html.read_text()
    folder = html.with_name(f"{html.stem}_files")
    for panel in manifest["panels"]:
        png = folder / panel["file"]
        assert png.is_file()
        assert f'src="{folder.name}/{panel["file"]}"' in page
        assert f'data-panel="{panel["name"]}"' in page
        pixels = _pixels(png)
        assert list(pixels.shape[1::-1]) == panel["size"]
        assert pixels.std() > 10  # not a blank picture
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def _has_colour(pixels: np.ndarray, hex_colour: str) -> bool:
    rgb = [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]
    return bool(np.any(np.all(np.abs(pixels.astype(int) - rgb) <= 2, axis=-1)))


def test_report_3d_every_panel(run3d, tmp_path):
    folder = run3d.parent
    html = tmp_path / "report.html"
    text = run_ok(
        "report",
        run3d,
        "--truth",
        folder / "truth.npy",
        "--model",
        folder / "model.tseg",
        "--out",
        html,
    )
    assert "report written to" in text
    manifest = _manifest(html)
    names = [p["name"] for p in manifest["panels"]]
    assert names == ["slices", "uncertainty", "iou", "confusion", "importance"]
    _check_pictures(html, manifest)
    panels = {p["name"]: p for p in manifest["panels"]}
    # the middle z, y and x planes (shape 20, 22, 18) of the image, labels and truth
    planes = ["z = 10", "y = 11", "x = 9"]
    assert panels["slices"]["axes"] == [
        f"{row}, {plane}" for row in ("image", "labels", "truth") for plane in planes
    ]
    assert panels["uncertainty"]["axes"] == [f"uncertainty, {plane}" for plane in planes]
    scores = ts.evaluate(run3d, folder / "truth.npy")
    assert panels["iou"]["axes"] == [f"per-class IoU (mean {scores['mean_iou']:.3f})"]
    assert panels["confusion"]["axes"] == [f"confusion (accuracy {scores['accuracy']:.3f})"]
    assert panels["importance"]["axes"][0].startswith("feature importance")
    # one colour per class value, the same in the legend of the slices and the IoU bars
    assert manifest["classes"] == [1, 2, 3]
    slices = _pixels(html.parent / "report_files/slices.png")
    iou = _pixels(html.parent / "report_files/iou.png")
    for colour in manifest["colours"].values():
        assert _has_colour(slices, colour)
        assert _has_colour(iou, colour)
    page = html.read_text()
    for key in ("model checksum", "accuracy", "mean IoU", "command"):
        assert f"<th>{key}</th>" in page
    assert f"{scores['accuracy']:.4f}" in page
    assert "class 1" in page
    assert "class 3" in page


def test_report_2d_labels_alone_then_with_image(run2d, tmp_path):
    """Predicted from an array: no image to draw (a note says so) until --image gives one;
    no uncertainty array, no truth, no model: the slices panel alone."""
    html = tmp_path / "r.html"
    text = run_ok("report", run2d, "--out", html)
    assert "not readable here" in text
    assert "no model given" in text
    manifest = _manifest(html)
    assert [p["name"] for p in manifest["panels"]] == ["slices"]
    assert manifest["panels"][0]["axes"] == ["labels, y, x"]
    assert any("no feature importances" in n for n in manifest["notes"])
    _check_pictures(html, manifest)
    page = html.read_text()
    assert "uncertainty" not in page
    assert "confusion" not in page

    html2 = tmp_path / "with_image.html"
    run_ok("report", run2d, "--image", run2d.parent / "image.npy", "--out", html2)
    manifest = _manifest(html2)
    assert manifest["panels"][0]["axes"] == ["image, y, x", "labels, y, x"]
    _check_pictures(html2, manifest)


def test_report_overwrite(run2d, tmp_path, capsys):
    html = tmp_path / "r.html"
    run_ok("report", run2d, "--out", html)
    before = html.read_text()
    assert main(["report", str(run2d), "--out", str(html)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--overwrite" in err
    assert html.read_text() == before
    run_ok("report", run2d, "--out", html, "--overwrite", "--image", run2d.parent / "image.npy")
    assert len(_manifest(html)["panels"][0]["axes"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r_files"]


def test_middle_views_and_strides():
    views = middle_views((20, 22, 18))
    assert [v.title for v in views] == ["z = 10", "y = 11", "x = 9"]
    assert [v.axes for v in views] == [("y", "x"), ("z", "x"), ("z", "y")]
    data = np.arange(20 * 22 * 18).reshape(20, 22, 18)
    volume = open_volume(data)
    np.testing.assert_array_equal(read_view(volume, views[1]), data[:, 11, :])
    (view,) = middle_views((5000, 3000), max_edge=1000)
    assert view.step == 5
    big = np.zeros((5000, 3000), np.uint8)
    assert read_view(open_volume(big), view).shape == (1000, 600)
    assert middle_views((3000, 100, 100), max_edge=1000)[0].step == 3


class _CountingArray:
    """An array that records how many elements each read returns."""

    def __init__(self, data):
        self.data, self.reads = data, []

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)

    def __getitem__(self, index):
        out = self.data[index]
        self.reads.append(out.size)
        return out


def test_report_reads_only_the_planes(run3d, phantom3d, tmp_path):
    image = _CountingArray(phantom3d.image)
    make_report(run3d, out=tmp_path / "r.html", image=image)
    z, y, x = phantom3d.image.shape
    assert sorted(image.reads) == sorted([y * x, z * x, z * y])


def test_label_colours():
    colours = class_colours([85, 170, 255])
    assert list(colours) == [85, 170, 255]
    assert len(set(colours.values())) == 3
    rgba = label_rgba(np.array([[0, 85], [255, 7]]), colours, alpha=0.5)
    assert rgba[0, 0, 3] == 0
    assert rgba[1, 1, 3] == 0
    assert tuple(rgba[0, 1, :3]) == colours[85]
    assert rgba[1, 0, 3] == 0.5
    assert len(set(class_colours(range(1, 31)).values())) == 30


# -- refusals: exit 2, one line, nothing written ----------------------------------------


def _refused(capsys, tmp_path, *args, match: str) -> None:
    before = sorted(tmp_path.rglob("*"))
    assert main(["report", *map(str, args)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tiledseg: error:")
    assert re.search(match, err), err
    assert sorted(tmp_path.rglob("*")) == before


def test_refuses_missing_output(tmp_path, capsys):
    _refused(
        capsys,
        tmp_path,
        tmp_path / "nope.zarr",
        "--out",
        tmp_path / "r.html",
        match="does not exist",
    )


def test_refuses_not_a_tiledseg_output(tmp_path, capsys):
    zarr.save_array(str(tmp_path / "plain.zarr"), np.ones((8, 8), np.uint8))
    _refused(
        capsys,
        tmp_path,
        tmp_path / "plain.zarr",
        "--out",
        tmp_path / "r.html",
        match="not a tiledseg output",
    )


def test_refuses_truth_of_another_shape(run3d, tmp_path, capsys):
    np.save(tmp_path / "truth.npy", np.ones((20, 22, 17), np.uint8))
    _refused(
        capsys,
        tmp_path,
        run3d,
        "--truth",
        tmp_path / "truth.npy",
        "--out",
        tmp_path / "r.html",
        match=r"truth .* has spatial shape \(20, 22, 17\) .* \(20, 22, 18\)",
    )


@pytest.mark.parametrize(
    ("out", "match"),
    [
        ("missing/r.html", "does not exist; create"),
        ("r.png", "not an .html file"),
        ("folder.html", "is a folder"),
    ],
)
def test_refuses_bad_report_path(run2d, tmp_path, capsys, out, match):
    (tmp_path / "folder.html").mkdir()
    _refused(capsys, tmp_path, run2d, "--out", tmp_path / out, match=match)


def test_refuses_unwritable_folder(run2d, tmp_path, capsys):
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            _refused(capsys, tmp_path, run2d, "--out", locked / "r.html", match="not writable")
        finally:
            locked.chmod(0o755)
    # /proc exists and takes no new files, even from root
    if Path("/proc/self").exists():
        _refused(capsys, tmp_path, run2d, "--out", "/proc/r.html", match="cannot create files in")
        assert not Path("/proc/r_files").exists()


def test_refuses_a_folder_it_did_not_make(run2d, tmp_path, capsys):
    (tmp_path / "r_files").mkdir()
    (tmp_path / "r_files" / "mine.txt").write_text("keep me")
    _refused(
        capsys,
        tmp_path,
        run2d,
        "--out",
        tmp_path / "r.html",
        "--overwrite",
        match="not a tiledseg report's",
    )
    assert (tmp_path / "r_files" / "mine.txt").read_text() == "keep me"


def test_refuses_without_matplotlib(run2d, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    _refused(capsys, tmp_path, run2d, "--out", tmp_path / "r.html", match=r"tiledseg\[report\]")


def test_matplotlib_is_imported_lazily():
    code = "import sys, tiledseg.report, tiledseg.cli; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_region_run_is_drawn_through_its_region_and_said(run3d, tmp_path):
    folder = run3d.parent
    out = tmp_path / "roi.zarr"
    ts.predict(
        str(folder / "image.npy"), folder / "model.tseg", out=out, roi="0:8,0:10,0:10", block=8
    )
    html = tmp_path / "roi.html"
    run_ok("report", out, "--out", html)
    manifest = _manifest(html)
    slices = {p["name"]: p for p in manifest["panels"]}["slices"]
    # the planes through the middle of the predicted region, not of the volume
    assert slices["axes"][-3:] == ["labels, z = 4", "labels, y = 5", "labels, x = 5"]
    assert any(
        "only the blocks meeting the region z 0:8, y 0:10, x 0:10" in n for n in manifest["notes"]
    )


def test_report_quiet_prints_nothing(run2d, tmp_path, capsys):
    html = tmp_path / "q.html"
    capsys.readouterr()
    assert main(["report", str(run2d), "--out", str(html), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")
    assert html.is_file()

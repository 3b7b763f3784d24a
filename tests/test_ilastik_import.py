"""ilastik projects imported: scribbles placed by blockSlice, names, the feature selection.

Synthetic projects (written here with h5py in ilastik's layout) cover the axis orders and
the bad input; the real projects of ../shared/data/ilastik-projects are imported, trained
on and compared with ilastik's own probabilities.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
import zarr
from numpy.testing import assert_array_equal

import tiledseg as ts
from tiledseg.cli import main
from tiledseg.errors import InputDataError, OutputExistsError

FEATURES = [
    "GaussianSmoothing",
    "LaplacianOfGaussian",
    "GaussianGradientMagnitude",
    "DifferenceOfGaussians",
    "StructureTensorEigenvalues",
    "HessianOfGaussianEigenvalues",
]
SCALES = [0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0]


def axistags(keys: str) -> str:
    return json.dumps({"axes": [{"key": k, "typeFlags": 1 if k == "c" else 2} for k in keys]})


def write_project(
    path, *, axes="zyxc", shape=(20, 30, 40, 1), blocks=(), names=("bg", "cells"),
    selection=None, in_2d=None, workflow="Pixel Classification", stage2=False,
    raw_path="raw.npy",
):  # fmt: skip
    """Write an ilastik-style project: blocks are ``(data, blockSlice, block axes)``."""
    import h5py

    with h5py.File(path, "w") as f:
        f["workflowName"] = workflow.encode()
        raw = f.create_group("Input Data/infos/lane0000/Raw Data")
        raw["axistags"] = axistags(axes).encode()
        raw["shape"] = np.asarray(shape, np.int64)
        raw["filePath"] = raw_path.encode()
        raw["location"] = b"FileSystem"
        for group in ["PixelClassification"] + (["PixelClassification01"] if stage2 else []):
            labels = f.create_group(f"{group}/LabelSets/labels000")
            for i, (data, where, keys) in enumerate(blocks):
                block = labels.create_dataset(f"block{i:04d}", data=data)
                block.attrs["blockSlice"] = where
                block.attrs["axistags"] = axistags(keys)
            f[f"{group}/LabelNames"] = np.asarray([n.encode() for n in names])
        chosen = np.zeros((6, 7), bool) if selection is None else selection
        if selection is None:
            chosen[0, [1, 3]] = chosen[3, 4] = True  # Gaussian at 0.7, 1.6; DoG at 3.5
        f["FeatureSelections/FeatureIds"] = np.asarray([n.encode() for n in FEATURES])
        f["FeatureSelections/Scales"] = np.asarray(SCALES)
        f["FeatureSelections/SelectionMatrix"] = chosen
        f["FeatureSelections/ComputeIn2d"] = np.zeros(7, bool) if in_2d is None else in_2d
    return str(path)


def test_blocks_are_placed_whatever_their_axis_order(tmp_path):
    first = np.zeros((1, 4, 5, 1), np.uint8)  # z, y, x, c
    first[0, 1:3, 2:4, 0] = 1
    second = np.full((6, 1, 2, 1), 2, np.uint8)  # x, y, z, c: another order than the image's
    second[0, 0, 0, 0] = 0
    project = write_project(
        tmp_path / "p.ilp",
        blocks=[(first, "[3:4,10:14,20:25,0:1]", "zyxc"), (second, "[30:36,0:1,7:9,0:1]", "xyzc")],
    )
    found = ts.import_ilastik(project, labels=tmp_path / "l.zarr", bank=tmp_path / "b.yaml")
    labels = zarr.open_array(str(tmp_path / "l.zarr"), mode="r")[...]
    expected = np.zeros((20, 30, 40), np.uint8)
    expected[3, 11:13, 22:24] = 1
    expected[7:9, 0, 30:36] = np.transpose(second[:, 0, :, 0])
    assert_array_equal(labels, expected)
    assert found.voxels == {1: 4, 2: 11}
    assert found.names == {1: "bg", 2: "cells"}
    stored = zarr.open_array(str(tmp_path / "l.zarr"), mode="r").attrs["ilastik"]
    assert stored["label_names"] == {"1": "bg", "2": "cells"}
    assert (found.axes, found.shape) == ("zyx", (20, 30, 40))
    assert found.raw == str((tmp_path / "raw.npy").resolve())
    bank = yaml.safe_load((tmp_path / "b.yaml").read_text())
    assert bank == {"gaussian_smoothing": [0.7, 1.6], "difference_of_gaussians": [3.5]}


def test_a_raw_image_in_another_axis_order_keeps_its_order(tmp_path):
    block = np.ones((3, 2, 1, 1), np.uint8)  # x, y, z, c as the image
    project = write_project(
        tmp_path / "p.ilp", axes="xyzc", shape=(40, 30, 20, 1),
        blocks=[(block, "[5:8,6:8,9:10,0:1]", "xyzc")],
    )  # fmt: skip
    found = ts.import_ilastik(project, labels=tmp_path / "l.zarr")
    labels = zarr.open_array(str(tmp_path / "l.zarr"), mode="r")
    assert found.axes == "xyz"
    assert labels.shape == (40, 30, 20)
    assert labels.metadata.dimension_names == ("x", "y", "z")
    assert int(labels[...].sum()) == 6
    assert labels[5:8, 6:8, 9].all()


def test_compute_in_2d_is_kept_per_scale_and_2d_images_get_none(tmp_path):
    selection = np.zeros((6, 7), bool)
    selection[0, [0, 5]] = True  # Gaussian at 0.3 (3D) and 5.0 (2D)
    selection[5, 4] = True  # Hessian at 3.5 (3D)
    in_2d = np.zeros(7, bool)
    in_2d[5] = True
    block = np.ones((1, 2, 2, 1), np.uint8)
    project = write_project(
        tmp_path / "p.ilp", blocks=[(block, "[0:1,0:2,0:2,0:1]", "zyxc")], selection=selection,
        in_2d=in_2d,
    )  # fmt: skip
    ts.import_ilastik(project, labels=tmp_path / "l.zarr", bank=tmp_path / "b.yaml")
    bank = ts.FeatureBank.from_yaml(tmp_path / "b.yaml")
    assert bank.in_2d == {"gaussian_smoothing": (5.0,)}
    assert bank.families["hessian_of_gaussian_eigenvalues"] == (3.5,)
    flat = write_project(
        tmp_path / "flat.ilp", axes="yxc", shape=(30, 40, 1),
        blocks=[(np.ones((2, 2, 1), np.uint8), "[0:2,0:2,0:1]", "yxc")], selection=selection,
        in_2d=in_2d,
    )  # fmt: skip
    ts.import_ilastik(flat, labels=tmp_path / "l2.zarr", bank=tmp_path / "b2.yaml")
    assert ts.FeatureBank.from_yaml(tmp_path / "b2.yaml").in_2d == {}


def test_the_command_prints_what_to_run_and_an_autocontext_says_so(tmp_path, capsys):
    block = np.ones((1, 2, 2, 1), np.uint8)
    project = write_project(
        tmp_path / "ac.ilp", blocks=[(block, "[0:1,0:2,0:2,0:1]", "zyxc")],
        workflow="AutocontextTwoStage", stage2=True,
    )  # fmt: skip
    labels, bank = str(tmp_path / "l.zarr"), str(tmp_path / "b.yaml")
    assert main(["import-ilastik", project, "--labels", labels, "--bank", bank]) == 0
    out, err = capsys.readouterr()
    assert "autocontext project: its first stage is imported" in err
    assert "not found here" in out  # (raw.npy is not beside the project)
    raw = f"'{tmp_path.resolve() / 'raw.npy'}[channel_axis=3]'"  # (the project's zyxc)
    assert f"train: tiledseg train {raw} {labels} --features {bank}" in out
    assert "label 1: 4 voxels (bg)" in out


def bad_projects(tmp_path):
    """(what, a project path, the message): each refused in one line, exit 2."""
    inside = (np.ones((1, 2, 2, 1), np.uint8), "[0:1,0:2,0:2,0:1]", "zyxc")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.zeros(3)
    no_features = np.zeros((6, 7), bool)
    return [
        ("not HDF5", str(tmp_path / "image.png"), "is not an ilastik project (not an HDF5 file)"),
        ("not ilastik", str(tmp_path / "other.h5"), "is not an ilastik project (no workflowName"),
        (
            "another workflow",
            write_project(tmp_path / "oc.ilp", blocks=[inside], workflow="Object Classification"),
            "tiledseg imports Pixel Classification and Autocontext projects",
        ),
        ("no labels", write_project(tmp_path / "empty.ilp"), "has no labels in lane 0"),
        (
            "a block outside",
            write_project(
                tmp_path / "out.ilp",
                blocks=[(np.ones((1, 2, 2, 1), np.uint8), "[19:20,29:31,0:2,0:1]", "zyxc")],
            ),
            "lies outside the image",
        ),
        (
            "a time series",
            write_project(tmp_path / "t.ilp", axes="tzyxc", shape=(5, 20, 30, 40, 1)),
            "holds a time series (5 frames)",
        ),
        (
            "no features",
            write_project(tmp_path / "nf.ilp", blocks=[inside], selection=no_features),
            "selects no features",
        ),
    ]


def test_bad_projects_are_one_line_and_write_nothing(tmp_path, capsys):
    for what, project, message in bad_projects(tmp_path):
        labels = tmp_path / f"{what}.zarr"
        bank = str(tmp_path / f"{what}.yaml")
        code = main(["import-ilastik", project, "--labels", str(labels), "--bank", bank])
        err = capsys.readouterr().err
        assert code == 2, what
        assert message in err, (what, err)
        assert len(err.strip().splitlines()) == 1, (what, err)
        assert "Traceback" not in err
        assert not labels.exists(), what
    lane = write_project(
        tmp_path / "lane.ilp",
        blocks=[(np.ones((1, 1, 1, 1), np.uint8), "[0:1,0:1,0:1,0:1]", "zyxc")],
    )
    with pytest.raises(
        InputDataError, match=r"has no image in lane 3 \(it has 1\); give --lane 0..0"
    ):
        ts.import_ilastik(lane, labels=tmp_path / "x.zarr", lane=3)


def test_existing_outputs_are_kept_unless_overwrite(tmp_path):
    block = np.ones((1, 2, 2, 1), np.uint8)
    project = write_project(tmp_path / "p.ilp", blocks=[(block, "[0:1,0:2,0:2,0:1]", "zyxc")])
    before = (tmp_path / "p.ilp").read_bytes()
    with pytest.raises(ts.TiledsegError, match="labels .*p.ilp' is one of the inputs"):
        ts.import_ilastik(project, labels=project, overwrite=True)  # (never the project)
    assert (tmp_path / "p.ilp").read_bytes() == before
    with pytest.raises(InputDataError, match="ilastik project .*gone.ilp' does not exist"):
        ts.import_ilastik(tmp_path / "gone.ilp", labels=tmp_path / "l.zarr")
    with pytest.raises(OutputExistsError, match="bank .*b.yaml/' is a folder"):
        ts.import_ilastik(project, labels=tmp_path / "l.zarr", bank=f"{tmp_path}/b.yaml/")
    assert not (tmp_path / "l.zarr").exists()  # (refused before anything is written)
    (tmp_path / "b.yaml").write_text("mine: true\n")
    with pytest.raises(OutputExistsError, match="bank .* exists"):
        ts.import_ilastik(project, labels=tmp_path / "l.zarr", bank=tmp_path / "b.yaml")
    assert (tmp_path / "b.yaml").read_text() == "mine: true\n"
    assert not (tmp_path / "l.zarr").exists()
    ts.import_ilastik(project, labels=tmp_path / "l.zarr", bank=tmp_path / "b.yaml", overwrite=True)
    assert "gaussian_smoothing" in (tmp_path / "b.yaml").read_text()
    assert zarr.open_array(str(tmp_path / "l.zarr"), mode="r")[0, 0:2, 0:2].all()


# -- the real projects: imported, trained on, compared with ilastik's probabilities ----------

REAL = [
    # project, raw image, ilastik's probabilities, r of the last class at least (measured)
    (
        "PixelClass3D.ilp",
        "ilastik-3d/image.npy[channel_axis=3]",
        "ilastik-3d/ilastik_probabilities.npy",
        0.95,
    ),
    (
        "PixelClass3D_2D_3D_feature_mix.ilp",
        "ilastik-3d/image.npy[channel_axis=3]",
        "ilastik-projects/res-Data_3D_pc3d2dfm.npy",
        0.93,
    ),
    (
        "PixelClass.ilp",
        "ilastik-projects/Data_1channel.png",
        "ilastik-projects/res-Data_1channel_pc1xyc.npy",
        0.97,
    ),
]


@pytest.mark.realdata
@pytest.mark.parametrize(("project", "raw", "reference", "least"), REAL)
def test_a_real_project_reproduced(data_dir, tmp_path, capsys, project, raw, reference, least):
    labels, bank, model = tmp_path / "l.zarr", tmp_path / "b.yaml", tmp_path / "m.tsm"
    ilp = str(data_dir / "ilastik-projects" / project)
    assert main(["import-ilastik", ilp, "--labels", str(labels), "--bank", str(bank)]) == 0
    image = str(data_dir / raw)
    args = ["train", image, str(labels), "--features", str(bank), "--classifier", "random-forest"]
    assert main([*args, "--model", str(model)]) == 0
    out = tmp_path / "o.zarr"
    assert (
        main(
            [
                "predict",
                image,
                "--model",
                str(model),
                "--out",
                str(out),
                "--probabilities",
                "--quiet",
            ]
        )
        == 0
    )
    ours = zarr.open_array(f"{out}/probabilities/0", mode="r")[...].astype(np.float64) / 255
    theirs = np.load(data_dir / reference)
    r = float(np.corrcoef(ours[-1].ravel(), theirs[..., -1].ravel())[0, 1])
    agree = float(np.mean(ours.argmax(0) == theirs.argmax(-1)))
    print(f"\n{project}: r {r:.4f} with ilastik's probabilities, argmax agreement {agree:.4f}")
    assert r >= least
    if project == "PixelClass3D.ilp":  # (the scribbles tiledseg's own ilastik test uses)
        import tifffile

        truth = tifffile.imread(data_dir / "ilastik-3d" / "scribbles.tif")
        assert_array_equal(zarr.open_array(str(labels), mode="r")[...], truth)
    if project == "PixelClass3D_2D_3D_feature_mix.ilp":
        assert ts.FeatureBank.from_yaml(bank).in_2d["gaussian_smoothing"] == (5.0,)

"""The engine on real images (../shared/data beside the project; skipped cleanly when absent).

- superalloy-2d: an SEM image of a Ni superalloy with scribbles and dense ground truth
  (values 85/170/255); train on the scribbles with the default bank, score every pixel.
- ilastik-3d: ilastik's API test volume and its own prediction (ilastik 1.4.1, vigra RF);
  our class-2 probability is compared with ilastik's by correlation (forests are random,
  so not by equality).

Run ``pytest -s -m realdata`` to see the scores.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import tiledseg as ts
from tiledseg.classifiers import ForestClassifier

pytestmark = pytest.mark.realdata


#: The features of ilastik's PixelClass3D.ilp project, in ilastik's own names.
def ilastik_forest(seed: int) -> ForestClassifier:
    """ilastik's forest: 100 trees grown until pure (tiledseg's default is smaller)."""
    return ForestClassifier(trees=100, depth=None, seed=seed)


ILASTIK_3D_BANK = {
    "GaussianSmoothing": [0.3, 5.0],
    "LaplacianOfGaussian": [1.6],
    "GaussianGradientMagnitude": [1.6],
    "DifferenceOfGaussians": [1.6],
    "StructureTensorEigenvalues": [3.5],
    "HessianOfGaussianEigenvalues": [3.5],
}


@pytest.fixture(scope="module")
def superalloy(data_dir):
    folder = data_dir / "superalloy-2d"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


def _superalloy_scores(folder, out, classifier=None):
    model = ts.train(
        str(folder / "image.tif"),
        str(folder / "scribbles.tif"),
        **({"classifier": classifier} if classifier else {}),
        cache_dir=None,
    )
    assert model.classes.tolist() == [85, 170, 255]
    assert model.bank == ts.resolve_bank("default", ndim=2)
    result = ts.predict(str(folder / "image.tif"), model, out=out)
    labels = zarr.open_array(f"{result.path}/labels/0")[...]
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {85, 170, 255}
    return ts.evaluate(result.path, str(folder / "ground_truth.tif"))


def test_superalloy_mean_iou(superalloy, tmp_path):
    scores = _superalloy_scores(superalloy, tmp_path / "xgb.zarr", "xgboost")
    print(
        f"\nsuperalloy-2d, default bank, xgboost: mIoU {scores['mean_iou']:.4f}, "
        f"accuracy {scores['accuracy']:.4f}, IoU {scores['iou']}"
    )
    assert scores["scored_voxels"] == 512 * 512
    assert scores["mean_iou"] >= 0.63


def _skimage_mean_iou(folder) -> float:
    """scikit-image's trainable segmentation with its defaults, mean over three forest seeds."""
    import tifffile
    from skimage.feature import multiscale_basic_features
    from skimage.future import fit_segmenter, predict_segmenter
    from sklearn.ensemble import RandomForestClassifier

    image = tifffile.imread(folder / "image.tif")
    scribbles = tifffile.imread(folder / "scribbles.tif")
    truth = tifffile.imread(folder / "ground_truth.tif")
    features = multiscale_basic_features(image)
    scores = []
    for seed in range(3):
        forest = RandomForestClassifier(n_estimators=50, max_depth=10, random_state=seed)
        labels = predict_segmenter(features, fit_segmenter(scribbles, features, forest))
        scores.append(ts.evaluate(labels, truth)["mean_iou"])
    return float(np.mean(scores))


def test_superalloy_default_classifier_matches_skimage(superalloy, tmp_path):
    """tiledseg's defaults (the random forest, the 2D bank) at least scikit-image's, on the
    same scribbles (issue 14's bar; 0.667 against 0.625 measured)."""
    scores = _superalloy_scores(superalloy, tmp_path / "default.zarr")
    reference = _skimage_mean_iou(superalloy)
    print(
        f"\nsuperalloy-2d, defaults: mIoU {scores['mean_iou']:.4f}, "
        f"accuracy {scores['accuracy']:.4f}, IoU {scores['iou']}; scikit-image {reference:.4f}"
    )
    assert scores["mean_iou"] >= max(0.63, reference)


def test_ilastik_3d_correlation(data_dir, tmp_path):
    folder = data_dir / "ilastik-3d"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    image = str(folder / "image.npy")
    model = ts.train(
        image,
        str(folder / "scribbles.tif"),
        channel_axis=3,
        features=ILASTIK_3D_BANK,
        classifier=ilastik_forest(0),
        cache_dir=None,
    )
    assert model.classes.tolist() == [1, 2]
    assert model.summary["labelled_voxels"] == {1: 38, 2: 22}
    assert model.n_channels == 1
    assert model.ndim == 3
    result = ts.predict(image, model, out=tmp_path / "out.zarr", probabilities=True)
    assert result.shape == (64, 64, 64)
    ours = zarr.open_array(f"{result.path}/probabilities/0")[...].astype(np.float64) / 255.0
    theirs = np.load(folder / "ilastik_probabilities.npy")
    assert theirs.shape == (64, 64, 64, 2)
    r = float(np.corrcoef(ours[1].ravel(), theirs[..., 1].ravel())[0, 1])
    agree = float(np.mean(ours.argmax(0) == theirs.argmax(-1)))
    print(
        f"\nilastik-3d: Pearson r of class-2 probability vs ilastik = {r:.4f}; "
        f"argmax agreement {agree:.4f}"
    )
    assert r >= 0.9  # 0.988 measured; a guard against regressions, forests being random


def test_ilastik_3d_probabilities_reproduced_over_seeds(data_dir, tmp_path):
    """The issue's bar: r >= 0.95 with ilastik's probabilities, over five forests.

    Random forests are random, and ilastik's reference is one forest: two of our own
    forests agree with each other only at r 0.99 (every tree is a stump on 60 scribbled
    voxels), so the check is over seeds: the mean and every seed, and the argmax of the
    five forests' mean probability (docs/features.md, "ilastik compatibility").
    """
    folder = data_dir / "ilastik-3d"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    image = str(folder / "image.npy")
    theirs = np.load(folder / "ilastik_probabilities.npy")
    rs, mean_proba = [], 0.0
    for seed in range(5):
        model = ts.train(
            image,
            str(folder / "scribbles.tif"),
            channel_axis=3,
            features=ILASTIK_3D_BANK,
            classifier=ilastik_forest(seed),
            seed=seed,
            cache_dir=None,
        )
        result = ts.predict(image, model, out=tmp_path / f"s{seed}.zarr", probabilities=True)
        ours = zarr.open_array(f"{result.path}/probabilities/0")[...].astype(np.float64) / 255.0
        rs.append(float(np.corrcoef(ours[1].ravel(), theirs[..., 1].ravel())[0, 1]))
        mean_proba = mean_proba + ours / 5
    agree = float(np.mean(np.argmax(mean_proba, axis=0) == theirs.argmax(-1)))
    print(f"\nilastik-3d over 5 seeds: r {np.round(rs, 4)}; 5-forest agreement {agree:.4f}")
    assert min(rs) >= 0.95  # 0.9746 measured
    assert np.mean(rs) >= 0.975  # 0.9827 measured
    assert agree >= 0.88  # 0.919 measured

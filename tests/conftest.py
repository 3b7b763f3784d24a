"""Shared fixtures: seeded phantoms, small banks, small trained models, real-data paths.

Every random draw is seeded; hypothesis runs derandomized with a modest number of
examples and no deadline (CI machines are slow and 2-core).
"""

from __future__ import annotations

import os

# XGBoost's OpenMP threads spin while they wait; when other processes share the cores
# (a loaded CI runner) a 2-thread fit then takes seconds instead of milliseconds. Set
# before XGBoost (and its libgomp) is loaded; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import tiledseg as ts  # noqa: E402
from tiledseg.classifiers import XGBoostClassifier  # noqa: E402
from tiledseg.testing import make_phantom  # noqa: E402

settings.register_profile(
    "tiledseg",
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "tiledseg-thorough",
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("TILEDSEG_HYPOTHESIS_PROFILE", "tiledseg"))

#: ../shared/data beside the project (absent in a fresh clone: realdata tests skip).
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: A bank whose halo (6 voxels) lets small volumes be cut into several uneven blocks.
SMALL_BANK = ts.FeatureBank(
    {
        "gaussian_smoothing": [0.7, 1.6],
        "gaussian_gradient_magnitude": [1.0],
        "difference_of_gaussians": [1.0],
        "structure_tensor_eigenvalues": [0.7],
        "hessian_of_gaussian_eigenvalues": [1.0],
    }
)

SHAPE_2D = (48, 40)
SHAPE_3D = (20, 22, 18)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep the default training-table cache out of the user's home directory."""
    monkeypatch.setenv("TILEDSEG_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def small_xgboost(seed: int = 0) -> XGBoostClassifier:
    """An XGBoost classifier that trains in a fraction of a second."""
    return XGBoostClassifier(max_rounds=15, patience=3, max_depth=3, seed=seed)


@pytest.fixture(scope="session")
def phantom2d():
    return make_phantom(SHAPE_2D, n_classes=3, feature_size=8.0, scribble_fraction=0.05, seed=1)


@pytest.fixture(scope="session")
def phantom3d():
    return make_phantom(SHAPE_3D, n_classes=3, feature_size=6.0, scribble_fraction=0.03, seed=2)


@pytest.fixture(scope="session")
def model2d(phantom2d):
    """A small XGBoost model on the 2D phantom (do not save it: saving sets its checksum)."""
    return ts.train(
        phantom2d.image,
        phantom2d.scribbles,
        features=SMALL_BANK,
        classifier=small_xgboost(),
        cache_dir=None,
    )


@pytest.fixture(scope="session")
def model3d(phantom3d):
    return ts.train(
        phantom3d.image,
        phantom3d.scribbles,
        features=SMALL_BANK,
        classifier=small_xgboost(),
        cache_dir=None,
    )


@pytest.fixture(scope="session")
def model_file(tmp_path_factory, phantom2d):
    """A saved 2D model: its path."""
    model = ts.train(
        phantom2d.image,
        phantom2d.scribbles,
        features=SMALL_BANK,
        classifier=small_xgboost(),
        cache_dir=None,
    )
    return model.save(tmp_path_factory.mktemp("model") / "model.tiledseg")


@pytest.fixture(scope="session")
def small_bank():
    return SMALL_BANK


@pytest.fixture
def fast_xgboost():
    """Factory of small XGBoost classifiers (a fresh, unfitted one per call)."""
    return small_xgboost


def _cuda_or_skip():
    """cupy with a CUDA device, or a clean skip (CI has neither)."""
    cupy = pytest.importorskip("cupy")
    from tiledseg.device import gpu_count

    if gpu_count() == 0:
        pytest.skip("cupy sees no CUDA device")
    return cupy


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module a shared test runs on: numpy always, cupy where there is a GPU."""
    return np if request.param == "numpy" else _cuda_or_skip()


@pytest.fixture
def device(xp) -> str:
    """The ``--device`` of the backend ``xp``: ``cpu`` for numpy, ``cuda`` for cupy."""
    return "cpu" if xp is np else "cuda"


@pytest.fixture
def cupy():
    """cupy on a CUDA device (tests that only make sense on a GPU)."""
    return _cuda_or_skip()


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def data_dir():
    """The real test data folder, or a clean skip when it is absent."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real test data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A private single-node SLURM (munged, slurmctld, slurmd), up for the whole session.

    Installs Debian's slurm packages first when they are missing (root and apt-get
    needed, else a skip). Clients find it through ``SLURM_CONF``, set while it runs.
    """
    from tiledseg.testing.slurm import SlurmController, SlurmUnavailable

    controller = SlurmController(tmp_path_factory.mktemp("slurm"))
    try:
        controller.start()
    except SlurmUnavailable as exc:
        # CI sets TILEDSEG_REQUIRE_SLURM=1: there a missing SLURM is a failure, not a skip
        if os.environ.get("TILEDSEG_REQUIRE_SLURM") == "1":
            pytest.fail(f"TILEDSEG_REQUIRE_SLURM=1 but no SLURM to test against: {exc}")
        pytest.skip(f"no SLURM to test against: {exc}")
    yield controller
    controller.stop()


def pytest_collection_modifyitems(items):
    """Tests that use the ``slurm`` fixture carry the ``slurm`` marker (-m 'not slurm')."""
    for item in items:
        if "slurm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)

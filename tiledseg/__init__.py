"""tiledseg: scribble-trained voxel classification of images far larger than memory.

Exact tiled filter-bank features, XGBoost or random forest trained on scribbles,
blockwise prediction into OME-Zarr, on threads or a dask cluster.
"""

import os

# XGBoost's OpenMP threads spin while they wait: on a shared node a 2-thread fit
# took 25-90x longer than with passive waiting (benchmarks/RESULTS.md). Set before
# xgboost is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tiledseg.clustering import ClusteringResult, cluster_phases  # noqa: E402
from tiledseg.errors import BlocksFailedError, ClusterConfigError, TiledsegError
from tiledseg.evaluate import evaluate
from tiledseg.features import FeatureBank, resolve_bank
from tiledseg.features.plugins import check_plugin, feature_plugin, register_feature
from tiledseg.features.tiled import feature_array
from tiledseg.model import Model, load_model
from tiledseg.predict import PredictionResult, predict
from tiledseg.training import train
from tiledseg.volume import Volume, open_volume

__version__ = "0.1.0"

__all__ = [
    "BlocksFailedError",
    "ClusterConfigError",
    "ClusteringResult",
    "FeatureBank",
    "Model",
    "PredictionResult",
    "TiledsegError",
    "Volume",
    "check_plugin",
    "cluster_phases",
    "evaluate",
    "feature_array",
    "feature_plugin",
    "load_model",
    "open_volume",
    "predict",
    "register_feature",
    "resolve_bank",
    "train",
]

"""tiledseg: scribble-trained voxel classification of images far larger than memory.

Exact tiled filter-bank features, XGBoost or random forest trained on scribbles,
blockwise prediction into OME-Zarr, on threads or a dask cluster.
"""

# OpenMP's wait policy is set when tiledseg starts work, not here (tiledseg/_openmp.py)
from tiledseg.clustering import ClusteringResult, cluster_phases
from tiledseg.collection import CollectionResult, predict_collection
from tiledseg.errors import BlocksFailedError, ClusterConfigError, TiledsegError
from tiledseg.evaluate import evaluate
from tiledseg.features import FeatureBank, resolve_bank
from tiledseg.features.plugins import check_plugin, feature_plugin, register_feature
from tiledseg.features.tiled import feature_array
from tiledseg.ilastik_import import IlastikImport, import_ilastik
from tiledseg.info import describe
from tiledseg.instances import InstancesResult, instances
from tiledseg.model import Model, load_model
from tiledseg.options import (
    Execution,
    ImageInput,
    Objects,
    PhaseSearch,
    Prediction,
    Smoothing,
    Training,
)
from tiledseg.predict import PredictionResult, predict
from tiledseg.segment import SegmentResult, segment
from tiledseg.training import train
from tiledseg.volume import Volume, open_volume

__version__ = "0.1.0"

__all__ = [
    "BlocksFailedError",
    "ClusterConfigError",
    "ClusteringResult",
    "CollectionResult",
    "Execution",
    "FeatureBank",
    "IlastikImport",
    "ImageInput",
    "InstancesResult",
    "Model",
    "Objects",
    "PhaseSearch",
    "Prediction",
    "PredictionResult",
    "SegmentResult",
    "Smoothing",
    "TiledsegError",
    "Training",
    "Volume",
    "check_plugin",
    "cluster_phases",
    "describe",
    "evaluate",
    "feature_array",
    "feature_plugin",
    "import_ilastik",
    "instances",
    "load_model",
    "open_volume",
    "predict",
    "predict_collection",
    "register_feature",
    "resolve_bank",
    "segment",
    "train",
]

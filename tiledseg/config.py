"""The run configuration: a strict pydantic model read from YAML.

``tiledseg segment CONFIG.yaml`` reads one of these; a typo in a key is an
error naming the key. Relative paths are taken relative to the config file.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StrictInt, ValidationError

from tiledseg.autocontext import MAX_STAGES
from tiledseg.classifiers import DEFAULT_CLASSIFIER
from tiledseg.errors import TiledsegError
from tiledseg.volume import split_dataset
from tiledseg.yamlfile import read_yaml

__all__ = ["SegmentConfig", "load_config"]


class SegmentConfig(BaseModel):
    """Train, predict and (with ``truth``) evaluate, in one run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(description="image path (zarr, OME-Zarr, TIFF, file.h5:/dataset, .npy)")
    labels: str = Field(description="scribbles: 0 = unlabelled, 1..K (any positive values)")
    model: str = Field(description="where the trained model is written")
    out: str = Field(description="output OME-Zarr group")
    truth: str | None = Field(None, description="dense ground truth to score the result against")
    features: str | dict[str, list[float]] = Field(
        "default", description="bank name, bank YAML file, or family: [scales]"
    )
    classifier: Literal["random-forest", "xgboost"] = DEFAULT_CLASSIFIER
    spacing: list[float] | str | None = Field(None, description='[z, y, x] or "z,y,x"')
    channel_axis: int | None = None
    extra_channels: list[str] | None = Field(
        None, description="co-registered images whose channels add their raw values as features"
    )
    filter_extra_channels: bool = Field(
        False, description="also compute the bank's families on the extra channels"
    )
    block: PositiveInt | list[PositiveInt] | None = None
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="cpu, cuda (each worker's GPU) or auto (a worker's GPU if it has one)"
    )
    workers: PositiveInt | None = None
    scheduler: str | None = Field(
        None, description="address (or scheduler file) of a running dask scheduler"
    )
    cluster: str | None = Field(
        None, description="cluster config file (tiledseg/cluster_configs/: local, slurm, ...)"
    )
    distributed_training: bool | None = Field(
        None, description="fit XGBoost on the cluster (default: when the table exceeds 1 GiB)"
    )
    select_features: PositiveInt | None = Field(
        None, description="keep the K most important features (held-out check)"
    )
    stages: StrictInt = Field(
        1, ge=1, le=MAX_STAGES, description="classifier stages (autocontext); 1: plain"
    )
    probabilities: bool = False
    uncertainty: bool = False
    roi: str | None = None
    smooth: Literal["none", "graphcut"] | None = Field(
        None, description="graph-cut smoothing of the labels"
    )
    smooth_weight: float | None = Field(None, description="graph-cut Potts weight (default 2)")
    smooth_neighbours: int | None = Field(None, description="4 or 8 (2D), 6 or 26 (3D)")
    smooth_iterations: int | None = Field(
        None, description="graph-cut expansion cycles (default 1; -1: until convergence)"
    )
    smooth_contrast_sigma: float | None = Field(
        None, description="blur of the graph cut's contrast image (default 1; 0: raw)"
    )
    overwrite: bool = False
    seed: int = 0

    def resolved(self, base: Path) -> SegmentConfig:
        """Return a copy whose relative paths are relative to ``base``."""

        def fix(value: str | None) -> str | None:
            if value is None:
                return None
            head, dataset = split_dataset(value)
            if not Path(head).is_absolute():
                head = str(base / head)
            return head if dataset is None else f"{head}:{dataset}"

        updates = {k: fix(getattr(self, k)) for k in ("image", "labels", "model", "out", "truth")}
        if self.extra_channels is not None:
            updates["extra_channels"] = [fix(p) for p in self.extra_channels]
        if self.cluster is not None and self.cluster.endswith((".yaml", ".yml")):
            updates["cluster"] = fix(self.cluster)
        if isinstance(self.features, str) and self.features.endswith((".yaml", ".yml")):
            updates["features"] = fix(self.features)
        return self.model_copy(update=updates)


def load_config(path: str | Path) -> SegmentConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    data = read_yaml(path, what="config file")
    if not isinstance(data, dict):
        raise TiledsegError(f"config file {str(path)!r} must hold a mapping of keys")
    try:
        config = SegmentConfig.model_validate(data)
    except ValidationError as exc:
        raise TiledsegError(f"config file {str(path)!r}: {_explain(exc, data)}") from None
    return config.resolved(path.resolve().parent)


def _explain(exc: ValidationError, data: dict) -> str:
    """One line naming the first bad key, the value given and what it should be."""
    errors = exc.errors()
    first = errors[0]
    key = str(first["loc"][0]) if first["loc"] else "(top level)"
    fields = list(SegmentConfig.model_fields)
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {key!r} ({hint}known keys: {', '.join(fields)})"
    if first["type"] == "missing":
        return f"required key {key!r} is missing"
    # a key with a union type (e.g. block: int or list) gives one error per member; their
    # locations hold pydantic's member names ("constrained-int"), which mean nothing to a
    # user. Report the key itself, and the member errors that are not plain type mismatches.
    same = [e for e in errors if e["loc"][:1] == first["loc"][:1]]
    specific = [e for e in same if not e["type"].endswith("_type")] or same
    messages = list(dict.fromkeys(_located(e) for e in specific))
    return f"key {key!r} = {data.get(key)!r}: {'; or '.join(messages)}"


def _located(error: dict) -> str:
    items = [str(p) for p in error["loc"][1:] if isinstance(p, int)]
    where = f"item {', '.join(items)}: " if items else ""
    return where + error["msg"]

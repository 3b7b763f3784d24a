"""The run configuration: a strict pydantic model, YAML in, JSON out.

``tiledseg segment CONFIG.yaml`` reads one of these; a typo in a key is an
error naming the key. Relative paths are taken relative to the config file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from tiledseg.errors import TiledsegError

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
    classifier: Literal["xgboost", "random-forest"] = "xgboost"
    spacing: list[float] | None = None
    channel_axis: int | None = None
    block: PositiveInt | list[PositiveInt] | None = None
    workers: PositiveInt | None = None
    probabilities: bool = False
    uncertainty: bool = False
    roi: str | None = None
    overwrite: bool = False
    seed: int = 0

    def resolved(self, base: Path) -> SegmentConfig:
        """Return a copy whose relative paths are relative to ``base``."""

        def fix(value: str | None) -> str | None:
            if value is None:
                return None
            head, sep, tail = value.partition(".h5:")
            path = Path(head)
            if not path.is_absolute():
                head = str(base / path)
            return head + sep + tail

        updates = {k: fix(getattr(self, k)) for k in ("image", "labels", "model", "out", "truth")}
        if isinstance(self.features, str) and self.features.endswith((".yaml", ".yml")):
            updates["features"] = fix(self.features)
        return self.model_copy(update=updates)


def load_config(path: str | Path) -> SegmentConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise TiledsegError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TiledsegError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise TiledsegError(f"config file {str(path)!r} must hold a mapping of keys")
    try:
        config = SegmentConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        fields = ", ".join(SegmentConfig.model_fields)
        hint = f" (known keys: {fields})" if first["type"] == "extra_forbidden" else ""
        raise TiledsegError(
            f"config file {str(path)!r}: key {key!r}: {first['msg']}{hint}"
        ) from None
    return config.resolved(path.resolve().parent)

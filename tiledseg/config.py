"""The run configuration of ``tiledseg segment``: the option models' fields, read from YAML.

A config file is a flat mapping: the paths of the run (``image``, ``labels``,
``model``, ``out``, ``truth``), ``overwrite``, and any field of the option models
(:mod:`tiledseg.options`) under the name the command line gives it without its
dashes (``smooth_weight`` for ``--smooth-weight``). A typo in a key is an error
naming the key. Relative paths are taken relative to the config file.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, create_model, model_validator

from tiledseg.errors import TiledsegError
from tiledseg.options import (
    Execution,
    ImageInput,
    Objects,
    OptionError,
    Options,
    Prediction,
    Smoothing,
    Training,
    build,
    cause_of,
    explain,
)
from tiledseg.volume import split_dataset
from tiledseg.yamlfile import read_yaml

__all__ = ["SegmentConfig", "TrainingImage", "load_config"]

#: The concerns a config holds, in the order of its keys after the paths.
CONCERNS = (ImageInput, Training, Execution, Prediction, Smoothing)

#: What a YAML file can hold where the API also takes objects (a FeatureBank, an
#: estimator, a ClusterConfig, arrays): the config's narrower type for those fields.
_YAML_TYPES: dict[str, Any] = {
    "features": str | dict[str, list[float]],
    "cluster": str | None,
    "extra_channels": list[str] | None,
    "roi": str | None,
    "mask": str | None,
}


class TrainingImage(Options):
    """One more image to train on, besides the config's ``image`` and ``labels``."""

    image: str = Field(description="image path")
    labels: str = Field(description="its scribbles")
    extra_channels: list[str] | None = Field(None, description="its extra channels")
    spacing: list[float] | str | None = Field(None, description="its spacing")


class InstancesSection(Objects):
    """The objects ``segment`` makes of its prediction (``tiledseg instances``)."""

    out: str = Field(description="the instance labels' OME-Zarr group (INST.zarr)")
    image: str | None = Field(
        None, description="the image for the mean intensities (default: the config's image)"
    )

    @property
    def objects(self) -> Objects:
        """The section's options, without its paths."""
        return Objects(**{k: getattr(self, k) for k in Objects.model_fields})


class _Run(Options):
    """Train, predict and (with ``truth``) evaluate, in one run."""

    image: str = Field(description="image path (zarr, OME-Zarr, TIFF, file.h5:/dataset, .npy)")
    labels: str = Field(description="scribbles: 0 = unlabelled, 1..K (any positive values)")
    model: str = Field(description="where the trained model is written")
    out: str = Field(description="output OME-Zarr group")
    truth: str | None = Field(None, description="dense ground truth to score the result against")
    overwrite: bool = Field(False, description="replace the model and output if they exist")
    training_images: list[TrainingImage] | None = Field(
        None,
        description="more images to train the one model on, each {image, labels} (and its "
        "own extra_channels, spacing); image is predicted",
    )

    predict_images: list[str] | str | None = Field(
        None,
        description="more images to predict with the model in the same run (paths or glob "
        "patterns such as tiles/*.tif), each to out_dir/<stem>.zarr",
    )
    out_dir: str | None = Field(None, description="the existing folder of predict_images' outputs")
    instances: InstancesSection | None = Field(
        None,
        description="objects of the prediction's classes: {classes, out} and optionally "
        "threshold, min_size, connectivity, table, image (tiledseg instances)",
    )

    @model_validator(mode="after")
    def _collection_holds(self) -> _Run:
        if (self.predict_images is None) != (self.out_dir is None):
            raise TiledsegError(
                "predict_images and out_dir go together: give both (the images to predict "
                "besides image, and the folder of their outputs) or neither"
            )
        own = {"extra_channels": self.extra_channels, "mask": self.mask, "roi": self.roi}
        if self.predict_images is not None and any(v for v in own.values()):
            which = next(k for k, v in own.items() if v)
            raise TiledsegError(
                f"{which} belongs to image alone and cannot serve predict_images; predict those "
                f"images with their own {which} ('tiledseg predict'), or leave it out"
                + (" (mask_threshold serves every image)" if which == "mask" else "")
            )
        return self

    @model_validator(mode="after")
    def _concerns_hold(self) -> _Run:
        # the checks between a concern's fields (smooth_weight needs smooth: graphcut)
        for concern in CONCERNS:
            self.concern(concern)
        return self

    def resolved(self, base: Path) -> Any:
        """Return a copy whose relative paths are relative to ``base``."""

        def fix(value: str | None) -> str | None:
            if value is None:
                return None
            head, dataset = split_dataset(os.path.expanduser(value))
            if not Path(head).is_absolute():
                head = str(base / head)
            return head if dataset is None else f"{head}:{dataset}"

        names = ("image", "labels", "model", "out", "truth", "cache_dir", "mask", "out_dir")
        updates: dict[str, Any] = {k: fix(getattr(self, k)) for k in names}
        for name in ("extra_channels", "predict_images"):  # (lists of paths; one as a text)
            paths = getattr(self, name)
            if paths is not None:
                updates[name] = [fix(p) for p in ([paths] if isinstance(paths, str) else paths)]
        if self.cluster is not None and self.cluster.endswith((".yaml", ".yml")):
            updates["cluster"] = fix(self.cluster)
        if isinstance(self.features, str) and self.features.endswith((".yaml", ".yml")):
            updates["features"] = fix(self.features)
        if self.instances is not None:
            paths = {"out": fix(self.instances.out), "image": fix(self.instances.image)}
            updates["instances"] = self.instances.model_copy(update=paths)
        if self.training_images:
            updates["training_images"] = [
                t.model_copy(
                    update={
                        "image": fix(t.image),
                        "labels": fix(t.labels),
                        "extra_channels": [fix(e) for e in t.extra_channels or []] or None,
                    }
                )
                for t in self.training_images
            ]
        return self.model_copy(update=updates)

    def concern(self, model: type[Options]) -> Options:
        """Return the options of one concern (e.g. ``config.concern(Execution)``)."""
        return build(model, {name: getattr(self, name) for name in model.model_fields}, "config")

    @property
    def execution(self) -> Execution:
        """Where and how blocks run."""
        return self.concern(Execution)

    @property
    def image_input(self) -> ImageInput:
        """How the image is read."""
        return self.concern(ImageInput)

    @property
    def training(self) -> Training:
        """What the model is trained on and how."""
        return self.concern(Training)

    @property
    def prediction(self) -> Prediction:
        """Which outputs the prediction writes."""
        return self.concern(Prediction)

    @property
    def smoothing(self) -> Smoothing:
        """Graph-cut smoothing of the labels."""
        return self.concern(Smoothing)


def _fields() -> dict[str, Any]:
    fields = {}
    for concern in CONCERNS:
        for name, info in concern.model_fields.items():
            annotation = _YAML_TYPES.get(name)
            if annotation is None:
                fields[name] = (info.annotation, info)
            else:  # the narrower type, with the field's default and description
                fields[name] = (annotation, Field(info.default, description=info.description))
    return fields


SegmentConfig = create_model("SegmentConfig", __base__=_Run, **_fields())
SegmentConfig.__doc__ = _Run.__doc__
SegmentConfig.__module__ = __name__


def load_config(path: str | Path) -> Any:
    """Read and validate a YAML config file into a :class:`SegmentConfig`."""
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
    cause = cause_of(exc)
    outer: tuple = ()  # where a nested model's error is (an item of training_images)
    while isinstance(cause, OptionError):  # raised by a model's __init__
        outer += tuple(exc.errors()[0]["loc"])
        exc = cause.validation
        cause = cause_of(exc)
    first = exc.errors()[0]
    where = outer + tuple(first["loc"])
    if where[:1] == ("training_images",) and len(where) > 2:
        return _training_image_error({**first, "loc": where})
    if where[:1] == ("instances",) and len(where) > 1:
        return _section_error({**first, "loc": where}, cause)
    key = str(first["loc"][0]) if first["loc"] else "(top level)"
    fields = list(SegmentConfig.model_fields)
    if isinstance(cause, TiledsegError):  # a check's own message
        return f"key {key!r} = {data.get(key)!r}: {cause}" if first["loc"] else str(cause)
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {key!r} ({hint}known keys: {', '.join(fields)})"
    if first["type"] == "missing":
        return f"required key {key!r} is missing"
    return explain(exc, data, source="config")


def _section_error(error: dict, cause: Any) -> str:
    """One line naming the key of the ``instances`` section."""
    key = str(error["loc"][1])
    known = ", ".join(InstancesSection.model_fields)
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, list(InstancesSection.model_fields), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"instances: unknown key {key!r} ({hint}known keys: {known})"
    if error["type"] == "missing":
        return f"instances: required key {key!r} is missing"
    return f"instances: key {key!r}: {cause if isinstance(cause, TiledsegError) else error['msg']}"


def _training_image_error(error: dict) -> str:
    """One line naming the item of ``training_images`` and its key."""
    item, key = error["loc"][1], error["loc"][2]
    where = f"training_images item {int(item) + 1}"
    known = ", ".join(TrainingImage.model_fields)
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key {key!r} (known keys: {known})"
    if error["type"] == "missing":
        return f"{where}: required key {key!r} is missing"
    return f"{where}: key {key!r}: {error['msg']}"

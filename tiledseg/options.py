"""The options of a run, one frozen model per concern, each value parsed and checked once.

Every option is a field of one of these models. The API functions take the models
(with the fields as keyword arguments for convenience, :func:`gather`), the
``tiledseg`` command's options are generated from the fields (:mod:`tiledseg.cli_options`),
and the YAML config of ``tiledseg segment`` is the models' fields side by side
(:mod:`tiledseg.config`). A field's name is the same everywhere: ``smooth_weight`` is
``--smooth-weight`` on the command line and ``smooth_weight:`` in a config file.

Adding an option is adding one field here: its type, default and ``description``
(the help text) are used by all three doors. One default differs on purpose:
``Execution.quiet`` is ``True`` in the API and ``False`` on the command line (a field's
``cli_default``), where a run shows its progress.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    model_validator,
)

from tiledseg.errors import TiledsegError

__all__ = [
    "CONCERNS",
    "DEFAULT_SMOOTH_WEIGHT",
    "Execution",
    "ImageInput",
    "OptionError",
    "Options",
    "Objects",
    "PhaseSearch",
    "Prediction",
    "Smoothing",
    "Training",
    "explain",
    "gather",
]


#: Potts weight of ``--smooth graphcut`` when none is given (docs/smoothing.md: choosing it).
DEFAULT_SMOOTH_WEIGHT = 2.0


class OptionError(TiledsegError):
    """A bad option value, as one line.

    It keeps pydantic's errors so that each door can name the option as its user wrote it
    (``--workers``, ``workers=``, ``key 'workers'``).
    """

    def __init__(self, message: str, validation: ValidationError):
        super().__init__(message)
        #: pydantic's errors behind the message
        self.validation = validation


class Options(BaseModel):
    """Base of the option models: frozen, strict about unknown names.

    A bad value raises a :class:`~tiledseg.errors.TiledsegError` of one line, whether the
    model is built directly (``Execution(workers=0)``), from keyword arguments, from the
    command line or from a config file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            # (pydantic's errors kept: a door that built the model names the option its way)
            raise OptionError(str(_user_error(exc, values, "api")), exc) from None

    def updated(self, **values: Any) -> Options:
        """Return a copy with ``values`` set, validated as the model's own fields."""
        # the values as they are (a FeatureBank stays one), not as model_dump would give them
        given = {name: getattr(self, name) for name in self.model_fields_set}
        return build(type(self), {**given, **values}, "api")


# -- parsers shared by several fields (each raises TiledsegError with the message the user sees)


def _block(value: Any) -> Any:
    """Check the command line's ``"N"`` or ``"Z,Y,X"``, kept as written.

    Later messages, such as a count that does not match the image's axes, quote it as the
    user wrote it.
    """
    if isinstance(value, str):
        from tiledseg.errors import BlockSizeError

        try:
            sizes = [int(p) for p in value.split(",")]
        except ValueError:
            raise BlockSizeError(
                f"block {value!r} must be an integer or integers separated by commas"
            ) from None
        if any(v <= 0 for v in sizes):
            raise BlockSizeError(f"block {value!r}: every block size must be a positive integer")
    return value


def _spacing_text(value: Any) -> Any:
    """Check ``"z,y,x"`` (kept as written, as a block)."""
    if isinstance(value, str):
        from tiledseg.volume import parse_spacing

        parse_spacing(value)
    return value


def _spacing_values(value: list[float] | str | None) -> list[float] | str | None:
    if isinstance(value, list):
        from tiledseg.volume import parse_spacing

        parse_spacing(value)  # positive and finite
    return value


def _text(value: Any) -> Any:
    """Return a path given as a ``Path`` as its text."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _finite(value: float | None) -> float | None:
    import math

    if value is not None and not math.isfinite(value):
        raise ValueError(f"give a finite number, not {value}")
    return value


def _device(value: Any) -> Any:
    from tiledseg.device import check_device

    return check_device(value)


def _stages(value: Any) -> int:
    from tiledseg.autocontext import check_stages

    return check_stages(value)


def _context(value: Any) -> str:
    from tiledseg.autocontext import check_context

    return check_context(value)


def _classes(value: Any) -> int:
    from tiledseg.clustering import check_classes

    return check_classes(value)


def _classifier(value: Any) -> Any:
    from tiledseg.classifiers import CLASSIFIERS, DEFAULT_CLASSIFIER

    if value is None:
        return DEFAULT_CLASSIFIER
    if not isinstance(value, str):
        return value  # an estimator: make_classifier checks it has fit and predict
    if value in ("random_forest", "rf"):
        return "random-forest"
    if value not in CLASSIFIERS:
        choices = " or ".join(repr(c) for c in CLASSIFIERS)
        raise ValueError(f"Input should be {choices} or an estimator; {value!r} is unknown")
    return value


def _sample_voxels(value: Any) -> int:
    from tiledseg.clustering import check_sample_voxels

    text = value.strip() if isinstance(value, str) else None
    return check_sample_voxels(int(text) if text and text.isdigit() else value)


def _seed(value: int) -> int:
    from tiledseg.clustering import check_seed

    return check_seed(value)


def _features(value: Any) -> Any:
    return "default" if value is None else value


def _number(value: Any) -> Any:
    # a config's integer is a number like the command line's text: its message shows 2.0
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _weight(value: Any) -> float | None:
    from tiledseg.smoothing.energy import check_weight

    return None if value is None else check_weight(_number(value))


def _iterations(value: Any) -> int | None:
    from tiledseg.smoothing.energy import check_iterations

    return None if value is None else check_iterations(value)


def _contrast_sigma(value: Any) -> float | None:
    from tiledseg.smoothing.energy import check_contrast_sigma

    return None if value is None else check_contrast_sigma(value)


def _neighbours(value: Any) -> int | None:
    from tiledseg.smoothing.energy import NEIGHBOURHOODS

    offered = sorted({n for sizes in NEIGHBOURHOODS.values() for n in sizes})
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # (YAML's 6.0)
    if isinstance(value, bool) or str(value).strip() not in {str(n) for n in offered}:
        raise TiledsegError(
            f"smooth neighbourhood {value} is not offered; use {', '.join(map(str, offered))}"
            " (4 or 8 in 2D, 6 or 26 in 3D)"
        )
    return int(value)


def _pyramid(value: Any) -> str | int:
    from tiledseg.pyramid import check_pyramid

    return check_pyramid(value)


def _ngff(value: Any) -> Any:
    # (a YAML 0.4 is a number)
    return str(value) if isinstance(value, float) else value


def _smooth(value: Any) -> Any:
    return "none" if value is None else value


Block = Annotated[PositiveInt | list[PositiveInt] | str | None, BeforeValidator(_block)]
Spacing = Annotated[
    list[float] | str | None, BeforeValidator(_spacing_text), AfterValidator(_spacing_values)
]


class Execution(Options):
    """Where and how blocks run."""

    device: Annotated[Literal["cpu", "cuda", "auto"], BeforeValidator(_device)] = Field(
        "cpu",
        description="Where blocks are computed: cpu, cuda (each worker's GPU; an error where a "
        "worker has none) or auto (a worker's GPU if it has one). Needs the 'gpu' extra.",
    )
    block: Block = Field(
        None,
        description="Processing block edge(s) in voxels (default 64,128,128 in 3D, 1024 in 2D).",
        json_schema_extra={"metavar": "N|Z,Y,X"},
    )
    workers: PositiveInt | None = Field(
        None,
        description="Run on N local worker processes (default: threads, one per core).",
        json_schema_extra={"metavar": "N"},
    )
    scheduler: Annotated[str | None, BeforeValidator(_text)] = Field(
        None,
        description="Run on the workers of a running dask scheduler: its address "
        "(tcp://host:8786) or its scheduler file.",
        json_schema_extra={"metavar": "ADDRESS|FILE"},
    )
    cluster: Any = Field(
        None,
        description="Start the dask cluster a config file describes: local processes, SLURM "
        "jobs (dask-jobqueue) or one worker per GPU; by name (local, slurm, ...) or a file, "
        "examples in tiledseg/cluster_configs/.",
        json_schema_extra={"metavar": "NAME|FILE"},
    )
    quiet: bool = Field(
        True,
        description="No progress bars.",
        # a library call prints nothing unless asked; the command shows its progress
        json_schema_extra={"cli_default": False},
    )

    @model_validator(mode="after")
    def _one_place(self) -> Execution:
        from tiledseg.cluster import check_placement

        check_placement(self.workers, self.scheduler, self.cluster)
        return self


class ImageInput(Options):
    """How the image is read."""

    spacing: Spacing = Field(
        None,
        description="Voxel spacing (else from OME metadata).",
        json_schema_extra={"metavar": "Z,Y,X"},
    )
    channel_axis: int | None = Field(None, description="Axis of IMAGE holding channels.")
    extra_channels: tuple[Any, ...] = Field(
        (),
        description="A co-registered image of IMAGE's spatial shape (another modality, a "
        "distance map...): each channel adds its raw value as a feature. Repeat the option "
        "for each image; the model records them and predict needs the same, in the same "
        "order. An extra's own channels are read from its metadata, or written after its "
        "path: PATH[channel_axis=N].",
        json_schema_extra={"metavar": "PATH"},
    )
    nan_fill: Annotated[float | None, AfterValidator(_finite)] = Field(
        None,
        description="Replace NaN and infinite values by this value (default: refuse them, "
        "naming the first block that holds one). The model records it, and predict uses the "
        "model's value when none is given.",
        json_schema_extra={"metavar": "VALUE"},
    )

    @model_validator(mode="before")
    @classmethod
    def _no_extras(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("extra_channels") is None:
            data = {k: v for k, v in data.items() if k != "extra_channels"}
        return data


class Training(Options):
    """What a model is trained on and how."""

    features: Annotated[Any, BeforeValidator(_features)] = Field(
        "default",
        description="Feature bank: a name (default, minimal, ilastik-full) or a YAML file.",
        json_schema_extra={"metavar": "NAME|FILE.yaml", "config_type": "features"},
    )
    filter_extra_channels: bool = Field(
        False, description="Also compute the bank's families on the extra channels."
    )
    classifier: Annotated[Any, BeforeValidator(_classifier)] = Field(
        "random-forest",
        description="random-forest or xgboost (the API also takes a scikit-learn estimator).",
        json_schema_extra={"choices": "classifiers"},
    )
    distributed_training: bool | None = Field(
        None,
        description="Fit XGBoost on the cluster's workers with xgboost.dask, the training table "
        "left on them (default: when the table exceeds 1 GiB and there is a cluster).",
        json_schema_extra={"cli": "--distributed-training/--local-training"},
    )
    # (0 or more than the bank holds: training's check names the bank's size)
    select_features: int | None = Field(
        None,
        description="Keep the K most important features (checked on held-out scribbles); the "
        "model then computes only the families and scales that hold them.",
        json_schema_extra={"metavar": "K"},
    )
    stages: Annotated[int, BeforeValidator(_stages)] = Field(
        1,
        description="Classifier stages (autocontext): stage k also sees the bank applied to "
        "stage k-1's probabilities. 2 often removes speckle; each stage adds a halo and a "
        "classifier.",
        json_schema_extra={"metavar": "N"},
    )
    context: Annotated[Literal["out-of-fold", "in-sample"], BeforeValidator(_context)] = Field(
        "out-of-fold",
        description="Where an earlier stage's probabilities at the scribbles come from: models "
        "that did not see the voxel's fold of strokes (out-of-fold) or the final earlier stage.",
    )
    cache: bool = Field(True, description="Read and write the training-table cache.")
    cache_dir: Annotated[str | None, BeforeValidator(_text)] = Field(
        None,
        description="Folder of the training-table cache (default: $TILEDSEG_CACHE_DIR, else "
        "$XDG_CACHE_HOME/tiledseg, else ~/.cache/tiledseg). train()'s keyword cache_dir=None "
        "is the older spelling of cache=False.",
        json_schema_extra={"metavar": "DIR"},
    )
    seed: Annotated[int, AfterValidator(_seed)] = Field(
        0,
        description="Random seed: of the classifier and the held-out split (train), of the "
        "sampled windows and k-means (cluster).",
    )


class Prediction(Options):
    """Which outputs a prediction writes, and where."""

    probabilities: bool = Field(False, description="Also write class probabilities (uint8).")
    uncertainty: bool = Field(False, description="Also write the uncertainty map (uint8).")
    roi: str | tuple[Any, ...] | None = Field(
        None,
        description="Only the blocks meeting e.g. '0:64,:,100:200'.",
        json_schema_extra={"metavar": "SLICES"},
    )
    mask: Annotated[Any, BeforeValidator(_text)] = Field(
        None,
        description="Segment only where this image of IMAGE's spatial shape is nonzero: blocks "
        "without a mask voxel are not read nor computed, and labels outside it are 0.",
        json_schema_extra={"metavar": "PATH"},
    )
    mask_threshold: Annotated[float | None, AfterValidator(_finite)] = Field(
        None,
        description="Segment only where IMAGE's first channel, smoothed by a Gaussian of sigma 2 "
        "voxels, is above T (skip the air); labels elsewhere are 0.",
        json_schema_extra={"metavar": "T"},
    )

    pyramid: Annotated[str | int, BeforeValidator(_pyramid)] = Field(
        "auto",
        description="Multiscale levels for viewers: auto (halve until the smallest side is "
        "about 256), none, or a number of halved levels.",
        json_schema_extra={"metavar": "auto|none|N"},
    )
    ngff: Annotated[Literal["0.5", "0.4"], BeforeValidator(_ngff)] = Field(
        "0.5",
        description="OME-Zarr version of the output: 0.5 (zarr v3) or 0.4 (zarr v2, for "
        "readers such as ilastik that open no other).",
    )

    @model_validator(mode="after")
    def _one_mask(self) -> Prediction:
        if self.mask is not None and self.mask_threshold is not None:
            raise TiledsegError(
                "--mask and --mask-threshold exclude each other; give a mask image or a "
                "threshold of the smoothed image, not both"
            )
        return self


class Smoothing(Options):
    """Graph-cut smoothing of the labels (:mod:`tiledseg.smoothing`)."""

    smooth: Annotated[Literal["none", "graphcut"], BeforeValidator(_smooth)] = Field(
        "none", description="Smooth the labels with a seamless blockwise graph cut."
    )
    smooth_weight: Annotated[float | None, BeforeValidator(_weight)] = Field(
        None,
        description="Graph-cut Potts weight in nats (default 2; larger smooths more).",
        json_schema_extra={"metavar": "W"},
    )
    smooth_neighbours: Annotated[int | None, BeforeValidator(_neighbours)] = Field(
        None,
        description="Graph-cut neighbourhood: 4 or 8 in 2D, 6 or 26 in 3D (default 4 / 6).",
        json_schema_extra={"metavar": "N"},
    )
    smooth_iterations: Annotated[int | None, BeforeValidator(_iterations)] = Field(
        None,
        description="Graph-cut expansion cycles (default 1; -1: until convergence, about 2.6x "
        "slower).",
        json_schema_extra={"metavar": "N"},
    )
    smooth_contrast_sigma: Annotated[float | None, BeforeValidator(_contrast_sigma)] = Field(
        None,
        description="Blur of the image the graph cut's contrast term compares (default 1; 0: raw).",
        json_schema_extra={"metavar": "S"},
    )

    @model_validator(mode="after")
    def _needs_graphcut(self) -> Smoothing:
        given = (
            self.smooth_weight,
            self.smooth_neighbours,
            self.smooth_iterations,
            self.smooth_contrast_sigma,
        )
        if self.smooth == "none" and any(v is not None for v in given):
            raise TiledsegError(
                "--smooth-weight, --smooth-neighbours, --smooth-iterations and "
                "--smooth-contrast-sigma need --smooth graphcut"
            )
        return self

    def settings(self, ndim: int) -> Any:
        """Return the solver's settings for ``ndim``-D images, ``None`` when off."""
        if self.smooth == "none":
            return None
        from tiledseg.smoothing import energy
        from tiledseg.smoothing.tiled import SmoothSettings

        return SmoothSettings(
            weight=DEFAULT_SMOOTH_WEIGHT if self.smooth_weight is None else self.smooth_weight,
            neighbours=energy.check_neighbours(self.smooth_neighbours, ndim),
            iterations=energy.check_iterations(self.smooth_iterations),
            contrast_sigma=energy.check_contrast_sigma(self.smooth_contrast_sigma),
        )


class PhaseSearch(Options):
    """Phases found without scribbles (``tiledseg cluster``)."""

    classes: Annotated[int, BeforeValidator(_classes)] = Field(
        description="Number of phases to find (2 or more).", json_schema_extra={"metavar": "K"}
    )
    sample_voxels: Annotated[int, BeforeValidator(_sample_voxels)] = Field(
        100_000,
        description="Voxels sampled (from random windows of the whole image) to fit the centres.",
        json_schema_extra={"metavar": "N"},
    )


def _object_classes(value: Any) -> tuple[int, ...]:
    """Parse ``"2"``, ``"2,3"``, 2 or [2, 3] into class values (positive integers)."""
    parts = value.split(",") if isinstance(value, str) else value
    parts = list(parts) if isinstance(parts, list | tuple) else [parts]
    try:
        values = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        raise TiledsegError(
            f"--class {value!r} must be class values separated by commas, e.g. 2 or 2,3"
        ) from None
    if not values or any(v <= 0 for v in values) or len(set(values)) != len(values):
        raise TiledsegError(f"--class {value!r} must be distinct positive class values")
    return values


def _as_float(value: Any, option: str, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or number != number:
        raise TiledsegError(f"{option} {value!r} must be {what}")
    return number


def _threshold(value: Any) -> float | None:
    if value is None:
        return None
    what = "a probability above 0, at most 1"
    number = _as_float(value, "--threshold", what)
    if not 0 < number <= 1:
        raise TiledsegError(f"--threshold {value!r} must be {what}")
    return number


def _min_size(value: Any) -> int:
    what = "a whole number of voxels, 0 or more"
    number = _as_float(value, "--min-size", what)
    if number < 0 or number != int(number):
        raise TiledsegError(f"--min-size {value!r} must be {what}")
    return int(number)


def _connectivity(value: Any) -> int | None:
    if value is None:
        return None
    what = "4 or 8 (2D), 6, 18 or 26 (3D)"
    if _as_float(value, "--connectivity", what) not in (4, 8, 6, 18, 26):
        raise TiledsegError(f"--connectivity {value!r} must be {what}")
    return int(float(value))


def _split_radius(value: Any) -> float | None:
    if value is None:
        return None
    what = "a distance above 0, in the image's spacing units"
    number = _as_float(value, "--split-radius", what)
    if not number > 0 or number == float("inf"):
        raise TiledsegError(f"--split-radius {value!r} must be {what}")
    return number


class Objects(Options):
    """Objects (instances) made of a prediction's classes (``tiledseg instances``)."""

    classes: Annotated[Any, BeforeValidator(_object_classes)] = Field(
        description="The class value(s) whose connected voxels are objects, e.g. 2 or 2,3 "
        "(objects of different classes are different objects).",
        json_schema_extra={"metavar": "K[,K2...]", "flag": "--class"},
    )
    threshold: Annotated[float | None, BeforeValidator(_threshold)] = Field(
        None,
        description="Objects from the probabilities instead: voxels whose probability of a "
        "class K is at least P (needs an output written with --probabilities).",
        json_schema_extra={"metavar": "P"},
    )
    min_size: Annotated[int, BeforeValidator(_min_size)] = Field(
        0,
        description="Drop objects of fewer voxels (before they are numbered).",
        json_schema_extra={"metavar": "V"},
    )
    connectivity: Annotated[int | None, BeforeValidator(_connectivity)] = Field(
        None,
        description="Neighbours that join voxels: 4 or 8 in 2D, 6, 18 or 26 in 3D (default 8 "
        "/ 26).",
        json_schema_extra={"metavar": "N"},
    )
    table: Literal["parquet", "csv", "none"] = Field(
        "parquet", description="The objects table beside the output: OUT.parquet or OUT.csv."
    )
    split: Literal["none", "distance"] = Field(
        "none",
        description="Split touching objects: 'distance' cuts them at their necks (a seeded "
        "watershed of the distance to their border, the seeds its maxima), blockwise with a "
        "halo.",
    )
    split_radius: Annotated[float | None, BeforeValidator(_split_radius)] = Field(
        None,
        description="With --split distance: the largest object radius it resolves, in the "
        "image's spacing units (default 8 voxels of the finest axis). Distances are capped "
        "at R and maxima within R/2 of a farther voxel are no seeds; blocks read 2.5 R "
        "beyond their borders.",
        json_schema_extra={"metavar": "R"},
    )

    @model_validator(mode="after")
    def _radius_splits(self) -> Objects:
        if self.split_radius is not None and self.split == "none":
            raise TiledsegError(
                "--split-radius sets how touching objects are split; add --split distance"
            )
        return self


#: Every concern, in the order a config file lists their keys.
CONCERNS: tuple[type[Options], ...] = (
    ImageInput,
    Training,
    Execution,
    Prediction,
    Smoothing,
    PhaseSearch,
    Objects,
)


def build(model: type[Options], values: Mapping[str, Any], source: str) -> Options:
    """Validate ``values`` as ``model``, a bad value being one :class:`TiledsegError`.

    ``source`` names the door the values came through (``"cli"``, ``"api"``), so the
    message names the option as the user wrote it.
    """
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise _user_error(exc, values, source) from None


def _user_error(exc: ValidationError, values: Mapping[str, Any], source: str) -> TiledsegError:
    cause = cause_of(exc)
    if isinstance(cause, OptionError):  # raised by the model's __init__: named for this door
        return _user_error(cause.validation, values, source)
    if isinstance(cause, TiledsegError):
        return cause  # a check's own message, with its own class
    return OptionError(explain(exc, values, source=source), exc)


def cause_of(exc: ValidationError) -> Exception | None:
    """Return the exception a validator raised for the first error, if one did."""
    return (exc.errors()[0].get("ctx") or {}).get("error")


def explain(exc: ValidationError, values: Mapping[str, Any], *, source: str) -> str:
    """One line naming the first bad option, the value given and what it should be.

    ``source``: ``"cli"`` (``--name value``), ``"api"`` (``name=value``) or
    ``"config"`` (``key 'name' = value``).
    """
    errors = exc.errors()
    first = errors[0]
    key = str(first["loc"][0]) if first["loc"] else "(top level)"
    # a field with a union type (block: int or list) gives one error per member; their
    # locations hold pydantic's member names ("constrained-int"), which mean nothing to a
    # user. Report the field itself, and the member errors that are not type mismatches.
    same = [e for e in errors if e["loc"][:1] == first["loc"][:1]]
    specific = [e for e in same if not e["type"].endswith("_type")] or same
    messages = list(dict.fromkeys(_located(e, source) for e in specific))
    value = values.get(key)
    if first["type"] == "missing":
        return f"--{key.replace('_', '-')} is required" if source == "cli" else f"{key} is required"
    if source == "config":
        return f"key {key!r} = {value!r}: {'; or '.join(messages)}"
    name = f"--{key.replace('_', '-')} {value}" if source == "cli" else f"{key}={value!r}"
    return f"{name}: {'; or '.join(messages)}"


def _located(error: Any, source: str) -> str:
    items = [str(p) for p in error["loc"][1:] if isinstance(p, int)]
    where = f"item {', '.join(items)}: " if items else ""
    if source != "config" and error["type"] == "greater_than" and error["ctx"]["gt"] == 0:
        return where + "give a positive number"
    return where + error["msg"].removeprefix("Value error, ")


def gather(
    given: Mapping[str, Options | None], options: Mapping[str, Any], *, what: str
) -> dict[str, Options]:
    """Return one model per concern: ``given``'s (or the defaults), updated by ``options``.

    ``given`` maps a parameter name (``"execution"``) to the model passed for it or
    ``None``; its class is taken from the parameter's name via :data:`PARAMETERS`.
    ``options`` are keyword arguments naming fields of those models; an unknown name
    is an error naming the closest one. ``what`` names the function, for that message.
    """
    models = {name: PARAMETERS[name] for name in given}
    fields = {f: name for name, model in models.items() for f in model.model_fields}
    unknown = [k for k in options if k not in fields]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TiledsegError(f"{what}() has no option {unknown[0]!r}{hint}")
    out = {}
    for name, model in models.items():
        base = given[name]
        if base is not None and not isinstance(base, model):
            raise TiledsegError(
                f"{what}(): {name}= takes a tiledseg.options.{model.__name__}, not "
                f"{type(base).__name__}"
            )
        mine = {k: v for k, v in options.items() if fields[k] == name}
        if base is None:
            out[name] = build(model, mine, "api")
        else:
            out[name] = base.updated(**mine) if mine else base
    return out


#: The API's parameter name of each concern.
PARAMETERS: dict[str, type[Options]] = {
    "image_input": ImageInput,
    "training": Training,
    "execution": Execution,
    "prediction": Prediction,
    "smoothing": Smoothing,
    "phases": PhaseSearch,
    "objects": Objects,
}

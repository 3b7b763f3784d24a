"""One run from a config: train on the scribbles, predict every voxel, score against truth.

``tiledseg segment CONFIG.yaml`` and :func:`segment` are the same run. Every input
is checked before a file is written, but for NaN or infinite values, which are refused
(or read as ``nan_fill``) where a block reads them; a rerun after a kill, or after the
blocks that read a NaN failed, continues the prediction with the model the first run wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiledseg.collection import CollectionResult
from tiledseg.errors import ModelFileError, OutputExistsError, TiledsegError
from tiledseg.model import Model
from tiledseg.predict import PredictionResult
from tiledseg.runs import unfinished_run
from tiledseg.volume import Volume, same_path

__all__ = ["SegmentResult", "bank_file", "segment"]


@dataclass(frozen=True)
class SegmentResult:
    """What :func:`segment` trained (or took up), predicted and scored."""

    model: Model
    #: False when the model of an unfinished run was used again (training skipped)
    trained: bool
    prediction: PredictionResult
    #: :func:`tiledseg.evaluate`'s scores when the config names a ``truth``
    scores: dict[str, Any] | None
    #: the ``predict_images`` predicted into ``out_dir``, and those that failed
    collection: CollectionResult | None = None
    #: True when ``out`` was complete already (a rerun for ``predict_images``): ``prediction``
    #: then describes nothing new (0 blocks)
    out_complete: bool = False
    #: the objects the config's ``instances`` section made of the prediction
    objects: Any = None


def segment(
    config: Any,
    *,
    command: str | None = None,
    on_model: Callable[[Model, bool], None] | None = None,
) -> SegmentResult:
    """Train, predict and (with ``truth``) evaluate, as a config describes.

    Parameters
    ----------
    config : SegmentConfig or path
        The run (:class:`tiledseg.config.SegmentConfig`), or its YAML file.
    command : str, optional
        The command line, recorded in the output's provenance.
    on_model : callable, optional
        Called as ``on_model(model, trained)`` once the model is there, before the
        prediction starts (the command prints the training summary with it).

    Returns
    -------
    SegmentResult
    """
    from tiledseg import kept_features
    from tiledseg.cluster import one_cluster
    from tiledseg.config import load_config
    from tiledseg.locks import output_lock

    if not hasattr(config, "training"):
        config = load_config(config)
    model = _check(config)
    # a rerun to finish predict_images: out is complete, made with the model file
    out_complete = model is not None and unfinished_run(config.out) is None
    volume = _open_inputs(config)
    ex = config.execution
    with (
        # one run per output, from training on (its prediction holds the same lock)
        output_lock(config.out),
        one_cluster(ex.workers, scheduler=ex.scheduler, cluster=ex.cluster, quiet=ex.quiet) as (
            _,
            scheduler,
        ),
        # the features training computes of blocks full of scribbles, for the prediction
        kept_features.using(config.out),
    ):
        shared = ex.updated(workers=None, cluster=None, scheduler=scheduler)
        trained = model is None
        if trained:
            model = _train(config, volume, shared)
        if on_model is not None:
            on_model(model, trained)
        if out_complete:
            prediction = PredictionResult(config.out, volume.shape, 0, 0, 0.0, 0)
        else:
            prediction = _predict(config, volume, model, shared, command)
        collection = _predict_more(config, model, shared, command)
        objects = _objects(config, shared, command)
    scores = None
    if config.truth is not None:
        import tiledseg

        scores = tiledseg.evaluate(config.out, config.truth)
    return SegmentResult(model, trained, prediction, scores, collection, out_complete, objects)


def _check(config: Any) -> Model | None:
    """Refuse outputs that would overwrite something; return an unfinished run's model."""
    from tiledseg.model import check_model_path
    from tiledseg.runs import prepare_output

    inputs = [config.image, config.labels, config.truth, bank_file(config.features)]
    inputs += config.extra_channels or []
    for more in config.training_images or []:  # never written over either
        inputs += [more.image, more.labels, *(more.extra_channels or [])]
    inputs += [config.mask] if isinstance(config.mask, str) else []
    inputs += _more_images(config)
    _check_instances(config, inputs)
    if same_path(config.model, config.out):
        raise OutputExistsError(
            f"the config's model and out are the same path {config.out!r}; give them "
            "different paths"
        )
    # a rerun after a kill during prediction (or, with predict_images, after its prediction
    # completed): the model it wrote is used again
    model = None if config.overwrite else _model_of_unfinished_run(config)
    if model is None:
        check_model_path(config.model, overwrite=config.overwrite, inputs=inputs)
        present = [i for i in inputs if i is not None]
        prepare_output(config.out, overwrite=config.overwrite, inputs=present)
    return model


def _more_images(config: Any) -> list[str]:
    """Return ``predict_images`` expanded, refusing a bad one or ``out_dir`` before training."""
    if config.predict_images is None:
        return []
    from tiledseg.collection import expanded, output_paths

    images = expanded(config.predict_images)
    if not Path(config.out_dir).is_dir():
        raise OutputExistsError(
            f"out_dir {config.out_dir!r} is not a folder; create it first (the outputs of "
            "predict_images are written into it)"
        )
    paths = output_paths(images, config.out_dir)
    if any(same_path(config.out, target) for target in paths.values()):
        raise OutputExistsError(
            f"out {config.out!r} is also the output of one of predict_images; give out a path "
            "outside out_dir or another name"
        )
    return images


def _check_instances(config: Any, inputs: list[str]) -> None:
    """Refuse an ``instances`` output that is another path of the run, or in the way.

    A complete one is left to :func:`tiledseg.instances`: the same settings again keep
    it (a config run again to finish what follows its prediction), others are refused.
    """
    from tiledseg.runs import check_apart, check_writable, is_tiledseg_output

    section = config.instances
    if section is None:
        return
    out = section.out
    if any(same_path(out, p) for p in (config.out, config.model)):
        raise OutputExistsError(
            f"instances out {out!r} is also the config's out or model; give it its own path"
        )
    if section.threshold is not None and not config.probabilities:
        raise TiledsegError(
            "instances: threshold needs the prediction's probabilities; set probabilities: "
            "true, or leave threshold out (objects of the labels)"
        )
    others = [p for p in (*inputs, config.out, config.out_dir) if p is not None]
    check_apart(out, others, what="instances output")
    check_writable(out, what="instances output")
    if config.overwrite:
        return
    if Path(out).exists() and not is_tiledseg_output(out):
        raise OutputExistsError(
            f"instances output {out!r} exists and is not a tiledseg output; choose another path"
        )
    table = Path(out).with_suffix(f".{section.table}")
    if section.table != "none" and table.exists() and not Path(out).exists():
        raise OutputExistsError(
            f"table {str(table)!r} exists; choose another path or pass --overwrite"
        )


def bank_file(features: Any) -> str | None:
    """Return the feature bank's YAML file, if it is given as one."""
    if isinstance(features, str) and features.lower().endswith((".yaml", ".yml")):
        return features
    return None


def _train(config: Any, volume: Volume, execution: Any) -> Model:
    import tiledseg

    # the volume holds the extra channels already
    image_input = config.image_input.updated(extra_channels=())
    images: Any = volume
    labels: Any = config.labels
    if config.training_images:  # one model on the scribbles of several images
        more = [t.model_dump(exclude_none=True) for t in config.training_images]
        images, labels = [(volume, config.labels), *more], None
    model = tiledseg.train(
        images,
        labels,
        execution=execution,
        image_input=image_input,
        training=config.training,
    )
    model.save(config.model, overwrite=config.overwrite)
    return model


def _predict(
    config: Any, volume: Volume, model: Model, execution: Any, command: str | None
) -> PredictionResult:
    import tiledseg

    return tiledseg.predict(
        volume,
        model,
        out=config.out,
        execution=execution,
        # the image's spacing is known (given, read or the default): that of its training
        image_input=config.image_input.updated(spacing=list(volume.spacing), extra_channels=()),
        prediction=config.prediction,
        smoothing=config.smoothing,
        overwrite=config.overwrite,
        command=command,
    )


def _predict_more(
    config: Any, model: Model, execution: Any, command: str | None
) -> CollectionResult | None:
    """Predict ``predict_images`` into ``out_dir`` in one run, on the same cluster."""
    if config.predict_images is None:
        return None
    from tiledseg.collection import predict_collection

    return predict_collection(
        config.predict_images,
        model,
        out_dir=config.out_dir,
        execution=execution,
        image_input=config.image_input.updated(spacing=None, extra_channels=()),
        prediction=config.prediction,
        smoothing=config.smoothing,
        overwrite=config.overwrite,
        command=command,
    )


def _objects(config: Any, execution: Any, command: str | None) -> Any:
    """Make the objects the config's ``instances`` section asks for, on the same cluster."""
    if config.instances is None:
        return None
    from tiledseg.instances import instances

    section = config.instances
    return instances(
        config.out,
        out=section.out,
        objects=section.objects,
        execution=execution.updated(block=None),  # (the prediction's blocks)
        image=section.image or config.image,
        overwrite=config.overwrite,
        command=command,
        complete_ok=True,
    )


def _model_of_unfinished_run(config: Any) -> Model | None:
    """Return the model file of ``config`` if its output is an unfinished run made with it.

    The config must also still ask for that model (bank and classifier); else ``None``.
    """
    from tiledseg.features.bank import resolve_bank
    from tiledseg.model import load_model

    stored = unfinished_run(config.out)
    if stored is None and (config.predict_images is not None or config.instances is not None):
        stored = _complete_run(config.out)  # (what came after the prediction may continue)
    if stored is None or not Path(config.model).is_file():
        return None
    try:
        # the config's bank first: it imports (and so allows) the plug-ins it names
        resolve_bank(config.features)
        model = load_model(config.model)
        bank = resolve_bank(config.features, ndim=model.ndim)
    except (ModelFileError, TiledsegError):
        return None
    if config.extra_channels:  # the count is the extras' channels, which the model has
        bank = bank.with_extra_channels(
            model.bank.extra_channels, filtered=config.filter_extra_channels
        )
    same = (
        (stored.get("identity") or {}).get("model_checksum") == model.checksum
        and bank.to_dict() == model.bank.to_dict()
        and model.classifier.name == config.classifier
        and model.n_stages == config.stages
        and list(config.extra_channels or []) == model.summary.get("extra_channels", [])
    )
    return model if same else None


def _complete_run(out: str) -> dict[str, Any] | None:
    """Return the provenance of a complete tiledseg output at ``out`` (``None``: none)."""
    import zarr

    from tiledseg.runs import is_tiledseg_output

    if not is_tiledseg_output(out):
        return None
    stored = dict(zarr.open_group(out, mode="r").attrs["tiledseg"])
    return stored if stored.get("complete") else None


def _open_inputs(config: Any) -> Volume:
    """Open the image and refuse a bad ROI, truth, image, mask or smoothing.

    Both happen before a model file is written. The image's values are not read here.
    """
    from tiledseg.masks import open_mask
    from tiledseg.volume import open_volume, parse_region, shape_mismatch, with_extra_channels

    volume = open_volume(config.image, channel_axis=config.channel_axis, spacing=config.spacing)
    if config.extra_channels:
        volume = with_extra_channels(volume, config.extra_channels)
    parse_region(config.roi, volume.shape)
    settings = config.smoothing.settings(volume.ndim)  # (the neighbourhood: from the axes)
    # the mask's shape (and a mask with the graph cut), before a model is trained
    open_mask(config.mask, config.mask_threshold, volume, smoothed=settings is not None)
    # NaN or infinite values are refused (or read as nan_fill) where a block is read:
    # training's boxes of scribbles, then prediction's blocks, which name the first one
    if config.truth is not None:
        truth = open_volume(config.truth, role="truth", allow_channels=False)
        if truth.shape != volume.shape:
            raise shape_mismatch(volume, truth, "truth")
    _check_shape_options(config, volume)
    return volume


def _check_shape_options(config: Any, volume: Volume) -> None:
    """Refuse the levels and the objects' settings the image's shape rules out, up front."""
    from tiledseg.instance_kernels import CONNECTIVITY
    from tiledseg.pyramid import level_count
    from tiledseg.volume import open_volume, shape_mismatch

    level_count(volume.shape, config.pyramid)  # (too many levels for the image: one line)
    section = config.instances
    if section is None:
        return
    allowed = CONNECTIVITY[volume.ndim]
    if section.connectivity is not None and section.connectivity not in allowed:
        raise TiledsegError(
            f"instances: connectivity {section.connectivity} is not one of a {volume.ndim}D "
            f"image's: give {' or '.join(map(str, allowed))}"
        )
    if section.image is not None:
        image = open_volume(section.image)
        if image.shape != volume.shape:
            raise shape_mismatch(volume, image, "instances image")

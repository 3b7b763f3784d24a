"""The ``tiledseg`` command: thin commands over the Python API.

Every command checks its inputs before it writes anything. A
:class:`~tiledseg.errors.TiledsegError` is printed as one line and exits with
status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from tiledseg._openmp import passive_waits
from tiledseg.classifiers import CLASSIFIERS, DEFAULT_CLASSIFIER
from tiledseg.device import DEVICES
from tiledseg.errors import OutputExistsError, TiledsegError
from tiledseg.volume import same_path, split_dataset

__all__ = ["cli", "main"]

_CLASSIFIERS = click.Choice(CLASSIFIERS)
_IMAGE_SUFFIXES = (".npy", ".tif", ".tiff", ".h5", ".hdf5", ".hdf", ".he5")


def _block_option(f):
    return click.option(
        "--block",
        default=None,
        metavar="N|Z,Y,X",
        help="Processing block edge(s) in voxels (default 64,128,128 in 3D, 1024 in 2D).",
    )(f)


def _features_option(f):
    return click.option(
        "--features",
        default="default",
        metavar="NAME|FILE.yaml",
        help="Feature bank: a name (default, minimal, ilastik-full) or a YAML file.",
    )(f)


def _spacing_option(f):
    return click.option(
        "--spacing", default=None, metavar="Z,Y,X", help="Voxel spacing (else from OME metadata)."
    )(f)


def _channel_axis_option(f):
    return click.option(
        "--channel-axis", type=int, default=None, help="Axis of IMAGE holding channels."
    )(f)


def _extra_channels_option(f):
    return click.option(
        "--extra-channels",
        "extra_channels",
        multiple=True,
        metavar="PATH",
        help="A co-registered image of IMAGE's spatial shape (another modality, a distance "
        "map...): each channel adds its raw value as a feature. Repeat the option for "
        "each image; the model records them and predict needs the same, in the same order.",
    )(f)


def _device_option(f):
    return click.option(
        "--device",
        type=click.Choice(DEVICES),
        default="cpu",
        show_default=True,
        help="Where blocks are computed: cpu, cuda (each worker's GPU; an error where a "
        "worker has none) or auto (a worker's GPU if it has one). Needs the 'gpu' extra.",
    )(f)


def _workers_option(f):
    return click.option(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="Run on N local worker processes (default: threads, one per core).",
    )(f)


def _scheduler_option(f):
    f = click.option(
        "--cluster",
        "cluster",
        default=None,
        metavar="FILE",
        help="Start the dask cluster a config file describes: local processes, SLURM jobs "
        "(dask-jobqueue) or one worker per GPU; examples in tiledseg/cluster_configs/.",
    )(f)
    return click.option(
        "--scheduler",
        default=None,
        metavar="ADDRESS|FILE",
        help="Run on the workers of a running dask scheduler: its address (tcp://host:8786) "
        "or its scheduler file.",
    )(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks (accepted anywhere on the line).")
@click.version_option(package_name="tiledseg")
def cli(debug: bool) -> None:
    """Segment 2D and 3D images far larger than memory from a few scribbles."""


@cli.command()
@click.argument("image")
@click.argument("labels")
@click.option("--model", "model_path", required=True, help="Where to write the model file.")
@_features_option
@click.option("--classifier", type=_CLASSIFIERS, default=DEFAULT_CLASSIFIER, show_default=True)
@_spacing_option
@_channel_axis_option
@_extra_channels_option
@click.option(
    "--filter-extra-channels",
    is_flag=True,
    help="Also compute the bank's families on the extra channels.",
)
@_block_option
@_device_option
@_workers_option
@_scheduler_option
@click.option(
    "--distributed-training/--local-training",
    "distributed_training",
    default=None,
    help="Fit XGBoost on the cluster's workers with xgboost.dask, the training table left "
    "on them (default: when the table exceeds 1 GiB and there is a cluster).",
)
@click.option(
    "--select-features",
    type=int,
    default=None,
    metavar="K",
    help="Keep the K most important features (checked on held-out scribbles); the model "
    "then computes only the families and scales that hold them.",
)
@click.option(
    "--stages",
    default="1",
    show_default=True,
    metavar="N",
    help="Classifier stages (autocontext): stage k also sees the bank applied to stage "
    "k-1's probabilities. 2 often removes speckle; each stage adds a halo and a classifier.",
)
@click.option("--no-cache", is_flag=True, help="Do not read or write the training-table cache.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing model file.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(
    image,
    labels,
    model_path,
    features,
    classifier,
    spacing,
    channel_axis,
    extra_channels,
    filter_extra_channels,
    block,
    device,
    workers,
    scheduler,
    cluster,
    distributed_training,
    select_features,
    stages,
    no_cache,
    seed,
    overwrite,
    quiet,
) -> None:
    """Train a classifier on the scribbles in LABELS (0 = unlabelled)."""
    import tiledseg
    from tiledseg.autocontext import check_stages
    from tiledseg.model import check_model_path

    stages = check_stages(stages)
    check_model_path(
        model_path,
        overwrite=overwrite,
        inputs=[image, labels, _bank_file(features), *extra_channels],
    )
    model = tiledseg.train(
        image,
        labels,
        features=features,
        classifier=classifier,
        spacing=spacing,
        channel_axis=channel_axis,
        extra_channels=list(extra_channels),
        filter_extra_channels=filter_extra_channels,
        block=block,
        device=device,
        workers=workers,
        scheduler=scheduler,
        cluster=cluster,
        distributed_training=distributed_training,
        select_features=select_features,
        stages=stages,
        cache_dir=None if no_cache else True,
        seed=seed,
        quiet=quiet,
    )
    model.save(model_path, overwrite=overwrite)
    _print_training(model, model_path)


def _bank_file(features: Any) -> str | None:
    """The feature bank's YAML file, if it is given as one."""
    if isinstance(features, str) and features.lower().endswith((".yaml", ".yml")):
        return features
    return None


#: Below this share of the labelled voxels a class gets a note after training.
_RARE_CLASS_SHARE = 0.02


def _print_training(model, model_path) -> None:
    s = model.summary
    mix = s["labelled_voxels"]
    total = max(1, sum(mix.values()))
    counts = ", ".join(f"{k}: {v} ({100 * v / total:.1f}%)" for k, v in mix.items())
    click.echo(f"labelled voxels per class: {counts}")
    rare = [k for k, v in mix.items() if v / total < _RARE_CLASS_SHARE]
    if rare:
        click.echo(
            f"note: class(es) {', '.join(map(str, rare))} hold less than "
            f"{100 * _RARE_CLASS_SHARE:.0f}% of the labelled voxels; training weighs every "
            "class equally, but so few examples may not describe them: paint more there"
        )
    line = f"{len(model.feature_names)} features, {model.classifier.name}"
    if "trees" in s:
        line += f" (XGBoost's random-forest mode, {s['trees']} trees)"
    if "rounds" in s:
        line += f", {s['rounds']} rounds"
    if s.get("device") == "cuda":
        line += ", fitted on the GPU"
    gpu_workers = s.get("feature_device", {}).get("gpu_workers", 0)
    if gpu_workers:
        line += f", features on {gpu_workers} GPU worker(s)"
    if model.n_stages > 1:
        line += f", {model.n_stages} stages (autocontext)"
    if "held_out_accuracy" in s:
        line += f", accuracy on held-out strokes {s['held_out_accuracy']:.3f}"
    if s.get("table_from_cache"):
        line += " (training table from cache)"
    if s.get("distributed"):
        line += f", trained on {s.get('training_workers')} dask workers (xgboost.dask)"
    click.echo(line + f", {s['seconds']:.1f} s")
    for stage in s.get("stages", [])[:-1]:
        accuracy = stage.get("held_out_accuracy")
        click.echo(
            f"  stage {stage['stage']}: {stage['n_features']} features"
            + (f", {stage['rounds']} rounds" if "rounds" in stage else "")
            + (f", accuracy on held-out strokes {accuracy:.3f}" if accuracy is not None else "")
        )
    single = [k for k, n in s.get("strokes", {}).items() if n == 1 and mix.get(k, 0) > 1]
    if single:
        click.echo(
            f"note: one stroke only for class(es) {', '.join(map(str, single))}: the held-out "
            "check used the far end of that stroke; paint a second, separate stroke for a "
            "check that means more"
        )
    hint = s.get("anisotropy")
    if hint:
        ratios = hint["ratios"]
        finest = min(ratios)
        suggestion = ",".join(f"{r / finest:.2g}" for r in ratios)
        click.echo(
            f"hint: no spacing is known for this image, and neighbouring voxels along "
            f"{'/'.join(hint['coarse'])} differ {max(ratios) / finest:.1f}x more than along "
            f"the finest axis: if that axis is coarser, give --spacing (e.g. --spacing "
            f"{suggestion}), "
            "so the filters cover the same distance along every axis"
        )
    if "selected_features" in s:
        click.echo(
            f"feature selection: kept {s['selected_features']} of {s['of_features']} features "
            f"({', '.join(f'{f} {v}' for f, v in model.bank.to_dict().items())}); held-out "
            f"accuracy {s['held_out_accuracy_all_features']:.3f} with all, "
            f"{s['held_out_accuracy_selected']:.3f} with the kept ones"
        )
    click.echo(f"model written to {model_path}")


@cli.command()
@click.argument("image")
@click.option("--model", "model_path", required=True, help="A model file from 'tiledseg train'.")
@click.option("--out", required=True, help="Output OME-Zarr group (OUT.zarr).")
@click.option("--probabilities", is_flag=True, help="Also write class probabilities (uint8).")
@click.option("--uncertainty", is_flag=True, help="Also write the uncertainty map (uint8).")
@click.option(
    "--roi", default=None, metavar="SLICES", help="Only the blocks meeting e.g. '0:64,:,100:200'."
)
@click.option(
    "--smooth",
    type=click.Choice(["none", "graphcut"]),
    default="none",
    help="Smooth the labels with a seamless blockwise graph cut.",
)
@click.option(
    "--smooth-weight",
    type=str,
    default=None,
    metavar="W",
    help="Graph-cut Potts weight in nats (default 2; larger smooths more).",
)
@click.option(
    "--smooth-neighbours",
    type=int,
    default=None,
    metavar="N",
    help="Graph-cut neighbourhood: 4 or 8 in 2D, 6 or 26 in 3D (default 4 / 6).",
)
@click.option(
    "--smooth-iterations",
    default=None,
    metavar="N",
    help="Graph-cut expansion cycles (default 1; -1: until convergence, about 2.6x slower).",
)
@click.option(
    "--smooth-contrast-sigma",
    default=None,
    metavar="S",
    help="Blur of the image the graph cut's contrast term compares (default 1; 0: raw).",
)
@_channel_axis_option
@_extra_channels_option
@_block_option
@_device_option
@_workers_option
@_scheduler_option
@click.option("--overwrite", is_flag=True, help="Replace an existing tiledseg output.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def predict(
    image,
    model_path,
    out,
    probabilities,
    uncertainty,
    roi,
    smooth,
    smooth_weight,
    smooth_neighbours,
    smooth_iterations,
    smooth_contrast_sigma,
    channel_axis,
    extra_channels,
    block,
    device,
    workers,
    scheduler,
    cluster,
    overwrite,
    quiet,
) -> None:
    """Classify every voxel of IMAGE and write OUT.zarr.

    A run that stopped (killed, out of walltime, failed blocks) continues when the
    same command is run again: blocks already written are skipped.
    """
    import tiledseg

    result = tiledseg.predict(
        image,
        model_path,
        out=out,
        probabilities=probabilities,
        uncertainty=uncertainty,
        roi=roi,
        smooth=smooth,
        smooth_weight=smooth_weight,
        smooth_neighbours=smooth_neighbours,
        smooth_iterations=smooth_iterations,
        smooth_contrast_sigma=smooth_contrast_sigma,
        block=block,
        channel_axis=channel_axis,
        extra_channels=list(extra_channels),
        device=device,
        workers=workers,
        scheduler=scheduler,
        cluster=cluster,
        overwrite=overwrite,
        quiet=quiet,
        command=_command_line(),
    )
    _print_prediction(result)


def _command_line() -> str:
    """The command line as given to :func:`main` (or ``sys.argv``), for the provenance."""
    obj = click.get_current_context().find_root().obj
    args = obj.get("argv") if isinstance(obj, dict) else None
    return shlex.join(["tiledseg", *(sys.argv[1:] if args is None else args)])


def _print_prediction(result) -> None:
    if result.skipped:
        click.echo(
            f"resumed: {result.skipped} of {result.blocks} blocks were already done and skipped"
        )
    click.echo(
        f"{result.voxels:,} voxels in {result.blocks - result.skipped} blocks, "
        f"{result.seconds:.1f} s "
        f"({result.voxels_per_second / 1e6:.2f} Mvox/s); written to {result.path}"
    )


@cli.command()
@click.argument("config_path", metavar="CONFIG.yaml")
@click.option("--overwrite", is_flag=True, help="Replace the model and output if they exist.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def segment(config_path, overwrite, quiet) -> None:
    """Train, predict and (with 'truth') evaluate from one config file."""
    import tiledseg
    from tiledseg.config import load_config
    from tiledseg.model import check_model_path
    from tiledseg.predict import smooth_settings
    from tiledseg.runs import prepare_output

    config = load_config(config_path)
    overwrite = overwrite or config.overwrite
    inputs = [config.image, config.labels, config.truth, _bank_file(config.features)]
    inputs += config.extra_channels or []
    if same_path(config.model, config.out):
        raise OutputExistsError(
            f"config {config_path!r}: model and out are the same path {config.out!r}; "
            "give them different paths"
        )
    # a rerun after a kill during prediction: the model it wrote is used again
    model = None if overwrite else _model_of_unfinished_run(config)
    if model is None:
        check_model_path(config.model, overwrite=overwrite, inputs=inputs)
        prepare_output(config.out, overwrite=overwrite, inputs=[i for i in inputs if i is not None])
    # one opened volume for train and predict: its whole-image NaN check is done once
    volume = _check_segment_inputs(config)
    # smoothing options are checked before training, not after it
    smooth_settings(
        config.smooth,
        weight=config.smooth_weight,
        neighbours=config.smooth_neighbours,
        iterations=config.smooth_iterations,
        contrast_sigma=config.smooth_contrast_sigma,
        ndim=volume.ndim,
    )
    from tiledseg import kept_features
    from tiledseg.cluster import one_cluster

    with (
        one_cluster(
            config.workers, scheduler=config.scheduler, cluster=config.cluster, quiet=quiet
        ) as (_, scheduler),
        # the features training computes of blocks full of scribbles, for the prediction
        kept_features.using(config.out),
    ):
        if model is not None:
            click.echo(
                f"model {config.model} is the model of the unfinished output {config.out}: "
                "training skipped, prediction resumed"
            )
        else:
            model = _train_for_segment(config, volume, scheduler=scheduler, quiet=quiet)
            model.save(config.model, overwrite=overwrite)
            _print_training(model, config.model)
        result = _predict_for_segment(
            config,
            volume,
            model,
            scheduler=scheduler,
            overwrite=overwrite,
            quiet=quiet,
            command=f"tiledseg segment {config_path}",
        )
    _print_prediction(result)
    if config.truth is not None:
        _print_scores(tiledseg.evaluate(config.out, config.truth), as_json=False)


def _predict_for_segment(
    config, volume, model, *, scheduler, overwrite: bool, quiet: bool, command: str
):
    import tiledseg

    return tiledseg.predict(
        volume,
        model,
        out=config.out,
        probabilities=config.probabilities,
        uncertainty=config.uncertainty,
        roi=config.roi,
        smooth=config.smooth,
        smooth_weight=config.smooth_weight,
        smooth_neighbours=config.smooth_neighbours,
        smooth_iterations=config.smooth_iterations,
        smooth_contrast_sigma=config.smooth_contrast_sigma,
        block=config.block,
        channel_axis=config.channel_axis,
        device=config.device,
        scheduler=scheduler,
        overwrite=overwrite,
        quiet=quiet,
        command=command,
    )


def _train_for_segment(config, volume, *, scheduler, quiet: bool):
    import tiledseg

    return tiledseg.train(
        volume,
        config.labels,
        features=config.features,
        classifier=config.classifier,
        spacing=config.spacing,
        channel_axis=config.channel_axis,
        block=config.block,
        device=config.device,
        scheduler=scheduler,
        distributed_training=config.distributed_training,
        select_features=config.select_features,
        stages=config.stages,
        filter_extra_channels=config.filter_extra_channels,
        seed=config.seed,
        quiet=quiet,
    )


def _model_of_unfinished_run(config):
    """The model file of ``config`` if its output is an unfinished run made with it and
    the config still asks for that model (bank and classifier), else ``None``."""
    from tiledseg.errors import ModelFileError
    from tiledseg.features.bank import resolve_bank
    from tiledseg.model import load_model
    from tiledseg.runs import unfinished_run

    stored = unfinished_run(config.out)
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


def _check_segment_inputs(config):
    """Open the image and refuse a bad ROI, truth or image before a model file is written."""
    from tiledseg.errors import InputDataError
    from tiledseg.predict import check_finite
    from tiledseg.volume import open_volume, parse_region, with_extra_channels

    volume = open_volume(config.image, channel_axis=config.channel_axis, spacing=config.spacing)
    if config.extra_channels:
        volume = with_extra_channels(volume, config.extra_channels)
    parse_region(config.roi, volume.shape)
    # training reads only the scribbled blocks: check the whole image before a model is written
    volume = check_finite(volume, workers=config.workers)
    if config.truth is not None:
        truth = open_volume(config.truth, role="truth", allow_channels=False)
        if truth.shape != volume.shape:
            raise InputDataError(
                f"truth {truth.name} has shape {truth.shape} but image {volume.name} has "
                f"spatial shape {volume.shape}; they must match"
            )
    return volume


@cli.command()
@click.argument("image")
@click.option(
    "--classes",
    required=True,
    metavar="K",
    help="Number of phases to find (2 or more).",
)
@click.option("--out", required=True, help="Output OME-Zarr group (OUT.zarr).")
@_features_option
@_spacing_option
@click.option(
    "--sample-voxels",
    type=int,
    default=100_000,
    show_default=True,
    metavar="N",
    help="Voxels sampled (from random windows of the whole image) to fit the centres.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@_channel_axis_option
@_block_option
@_device_option
@_workers_option
@_scheduler_option
@click.option("--overwrite", is_flag=True, help="Replace an existing tiledseg output.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def cluster(
    image,
    classes,
    out,
    features,
    spacing,
    sample_voxels,
    seed,
    channel_axis,
    block,
    device,
    workers,
    scheduler,
    cluster,
    overwrite,
    quiet,
) -> None:
    """Label IMAGE's phases without scribbles (k-means on the features) into OUT.zarr.

    Label 1 is the darkest phase. The phases are the same for any --block or
    --workers; a stopped run continues when the same command runs again.
    """
    from tiledseg.clustering import cluster_phases

    result = cluster_phases(
        image,
        classes=classes,
        out=out,
        features=features,
        spacing=spacing,
        channel_axis=channel_axis,
        block=block,
        sample_voxels=sample_voxels,
        seed=seed,
        workers=workers,
        scheduler=scheduler,
        cluster=cluster,
        overwrite=overwrite,
        quiet=quiet,
        command=_command_line(),
        device=device,
    )
    phases = ", ".join(
        f"{p['label']}: {100 * p['sample_share']:.1f}% (level {p['level']:.4g})"
        for p in result.phases
    )
    click.echo(f"phases (share of the sampled voxels, smoothed intensity): {phases}")
    _print_prediction(result)


@cli.command()
@click.argument("prediction")
@click.argument("truth")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
def evaluate(prediction, truth, as_json) -> None:
    """Score PREDICTION against dense ground truth TRUTH (0 = not scored)."""
    import tiledseg

    _print_scores(tiledseg.evaluate(prediction, truth), as_json=as_json)


def _print_scores(scores: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(scores, indent=2))
        return
    click.echo(
        f"accuracy {scores['accuracy']:.4f}, mean IoU {scores['mean_iou']:.4f} "
        f"over {scores['scored_voxels']:,} voxels"
    )
    if scores.get("unpredicted_voxels"):
        click.echo(
            f"  ({scores['unpredicted_voxels']:,} labelled voxels were not predicted and are "
            "not scored)"
        )
    for value, iou in scores["iou"].items():
        click.echo(f"  class {value}: IoU {iou:.4f}")
    classes = scores["classes"]
    width = max(8, *(len(str(c)) + 2 for c in classes))
    click.echo("confusion (rows: truth, columns: prediction)")
    click.echo(" " * width + "".join(f"{c:>{width}}" for c in classes))
    for c, row in zip(classes, scores["confusion"], strict=True):
        click.echo(f"{c:>{width}}" + "".join(f"{v:>{width}}" for v in row))


@cli.command()
@click.argument("output", metavar="OUT.zarr")
@click.option("--out", required=True, metavar="REPORT.html", help="The HTML file to write.")
@click.option(
    "--truth", default=None, help="Dense ground truth: adds IoU bars and the confusion matrix."
)
@click.option(
    "--image", default=None, help="Image under the labels (default: the output's own image)."
)
@click.option(
    "--model", "model_path", default=None, help="Model file: adds its feature importances."
)
@_channel_axis_option
@click.option("--overwrite", is_flag=True, help="Replace an existing report.")
def report(output, out, truth, image, model_path, channel_axis, overwrite) -> None:
    """Draw OUT.zarr's middle planes, uncertainty, scores and importances into an HTML page.

    The PNGs (and manifest.json) go to a folder named after the page: report_files/
    beside report.html.
    """
    from tiledseg.report import make_report

    result = make_report(
        output,
        out=out,
        truth=truth,
        image=image,
        model=model_path,
        channel_axis=channel_axis,
        overwrite=overwrite,
    )
    for note in result.notes:
        click.echo(f"note: {note}")
    names = ", ".join(p.name for p in result.panels)
    click.echo(f"report written to {result.html} (panels: {names}; pictures in {result.folder})")


@cli.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(path, as_json) -> None:
    """Describe a store (shape, dtype, chunks, axes, spacing) or a model file."""
    from tiledseg.model import load_model, versions
    from tiledseg.volume import open_volume

    target = Path(split_dataset(path)[0])
    if target.suffix.lower() in (".yaml", ".yml", ".json", ".txt"):
        raise TiledsegError(
            f"{path!r} is neither an image nor a model; 'tiledseg info' describes stores "
            "(zarr, OME-Zarr, TIFF, HDF5, .npy) and model files"
        )
    if target.is_file() and not target.name.lower().endswith(_IMAGE_SUFFIXES):
        # a model file, or a clear error for a pickle or anything else
        data = load_model(target).describe()
        data["kind"] = "model"
    else:
        from tiledseg.runs import is_tiledseg_output

        data = open_volume(path).describe()
        data["kind"] = "image"
        data["installed"] = versions()
        if is_tiledseg_output(path):
            import zarr

            data["kind"] = "tiledseg output"
            data["provenance"] = dict(zarr.open_group(path, mode="r").attrs["tiledseg"])
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if data["kind"] == "model":
        _print_model(data)
    else:
        for key in (
            "path",
            "shape",
            "axes",
            "channels",
            "dtype",
            "chunks",
            "spacing",
            "spacing_from",
        ):
            click.echo(f"{key:>12}: {data[key]}")
        if "provenance" in data:
            info = data["provenance"]
            arrays = ", ".join(info.get("arrays", []))
            state = f"complete: {info.get('complete')}"
            if not info.get("complete"):
                from tiledseg.runs import done_blocks

                state += (
                    f" ({len(done_blocks(path))} blocks done; the same command again "
                    "continues the run)"
                )
            click.echo(f"{'output':>12}: {arrays}; {state}")
            click.echo(f"{'classes':>12}: {info.get('classes')}")
            click.echo(f"{'model':>12}: {info.get('model_checksum')}")
            click.echo(f"{'command':>12}: {info.get('command')}")
            smoothing = info.get("smoothing")
            if smoothing:
                settings = ", ".join(f"{k} {v}" for k, v in smoothing.items() if k != "method")
                click.echo(f"{'smoothing':>12}: {smoothing.get('method')} ({settings})")


def _print_model(data: dict[str, Any]) -> None:
    click.echo(
        f"model: {data['classifier']}, classes {data['classes']}, {data['ndim']}D, "
        f"{data['channels']} channel(s), spacing {data['spacing']}, halo {data['halo']}"
    )
    click.echo(f"checksum: {data['checksum']}")
    summary = data["summary"]
    extra = data["bank"].get("extra_channels")
    if extra:
        how = "raw values and the bank's families" if extra["filtered"] else "raw values"
        paths = ", ".join(summary.get("extra_channels") or [])
        click.echo(
            f"extra channels: {extra['count']} ({how}), trained with {paths}; predict needs "
            "--extra-channels"
        )
    if data["bank"].get("in_2d"):
        click.echo(f"computed in 2D per plane: {', '.join(data['bank']['in_2d'])}")
    click.echo(
        "training: "
        + ", ".join(
            f"{k}={summary[k]}"
            for k in ("labelled_voxels", "strokes", "rounds", "held_out_accuracy", "seconds")
            if k in summary
        )
    )
    for stage in summary.get("stages", []):
        fields = ", ".join(
            f"{k}={stage[k]}" for k in ("n_features", "rounds", "held_out_accuracy") if k in stage
        )
        click.echo(f"stage {stage['stage']} of {data['stages']}: {fields}")
    click.echo("versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()))
    importance = data.get("importance")
    click.echo(f"{len(data['features'])} features" + (" (importance)" if importance else "") + ":")
    for i, name in enumerate(data["features"]):
        extra = f"  {importance[i]:.4f}" if importance else ""
        click.echo(f"  {i:3d} {name}{extra}")


@cli.command()
@click.option(
    "--out", default="demo-output", show_default=True, help="Folder for the demo's files."
)
@click.option(
    "--size",
    type=click.IntRange(32, 512),
    default=128,
    show_default=True,
    help="Edge of the phantom cube.",
)
@_workers_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out, size, workers, quiet) -> None:
    """Make a 3D phantom, train on its scribbles, predict, evaluate, report."""
    from tiledseg.demo import run_demo

    started = time.perf_counter()
    run_demo(out, size=size, workers=workers, quiet=quiet, echo=click.echo)
    click.echo(f"demo done in {time.perf_counter() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn errors into one line and an exit status."""
    passive_waits()
    args = sys.argv[1:] if argv is None else list(argv)
    # --debug is accepted anywhere on the line, not only before the command
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        cli.main(args=args, prog_name="tiledseg", standalone_mode=False, obj={"argv": args})
    except click.exceptions.Abort:
        click.echo("tiledseg: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except TiledsegError as exc:
        if debug:
            raise
        click.echo(f"tiledseg: error: {exc}", err=True)
        # 2: the input or options are wrong; a run with failed blocks says 1
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        click.echo("tiledseg: interrupted", err=True)
        return 130
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"tiledseg: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
            "traceback, and please report it)",
            err=True,
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

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
from typing import Any

import click

from tiledseg._openmp import passive_waits
from tiledseg.cli_options import model_options, take
from tiledseg.errors import TiledsegError
from tiledseg.options import (
    Execution,
    ImageInput,
    Objects,
    PhaseSearch,
    Prediction,
    Smoothing,
    Training,
)

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks (accepted anywhere on the line).")
@click.version_option(package_name="tiledseg")
def cli(debug: bool) -> None:
    """Segment 2D and 3D images far larger than memory from a few scribbles."""


@cli.command()
@click.argument("images", nargs=-1, required=True, metavar="IMAGE LABELS [IMAGE LABELS]...")
@click.option("--model", "model_path", required=True, help="Where to write the model file.")
@model_options(Training, ImageInput, Execution)
@click.option("--overwrite", is_flag=True, help="Replace an existing model file.")
def train(images, model_path, overwrite, **options) -> None:
    """Train a classifier on the scribbles in LABELS (0 = unlabelled).

    Several IMAGE LABELS pairs train one model on the scribbles of them all.
    """
    import tiledseg
    from tiledseg.model import check_model_path
    from tiledseg.segment import bank_file

    if len(images) % 2:
        raise click.UsageError(
            f"give IMAGE LABELS pairs; {len(images)} paths were given ({images[-1]!r} has no "
            "labels)"
        )
    training = take(options, Training)
    image_input = take(options, ImageInput)
    check_model_path(
        model_path,
        overwrite=overwrite,
        inputs=[*images, bank_file(training.features), *image_input.extra_channels],
    )
    pairs = list(zip(images[::2], images[1::2], strict=True))
    model = tiledseg.train(
        *(pairs[0] if len(pairs) == 1 else (pairs,)),
        execution=take(options, Execution),
        image_input=image_input,
        training=training,
    )
    model.save(model_path, overwrite=overwrite)
    _print_training(model, model_path)


#: Below this share of the labelled voxels a class gets a note after training.
_RARE_CLASS_SHARE = 0.02


def _print_training(model, model_path) -> None:
    s = model.summary
    mix = s["labelled_voxels"]
    total = max(1, sum(mix.values()))
    counts = ", ".join(f"{k}: {v} ({100 * v / total:.1f}%)" for k, v in mix.items())
    click.echo(f"labelled voxels per class: {counts}")
    for entry in s.get("images", []):  # several training images
        per = ", ".join(f"{k}: {v}" for k, v in entry["labelled_voxels"].items())
        click.echo(f"  {entry['image']}: {per}")
    rare = [k for k, v in mix.items() if v / total < _RARE_CLASS_SHARE]
    if rare:
        click.echo(
            f"note: class(es) {', '.join(map(str, rare))} hold less than "
            f"{100 * _RARE_CLASS_SHARE:.0f}% of the labelled voxels; training weighs every "
            "class equally, but so few examples may not describe them: paint more there"
        )
    click.echo(_training_line(model))
    for stage in s.get("stages", [])[:-1]:
        accuracy = stage.get("held_out_accuracy")
        click.echo(
            f"  stage {stage['stage']}: {stage['n_features']} features"
            + (f", {stage['rounds']} rounds" if "rounds" in stage else "")
            + (f", accuracy on held-out strokes {accuracy:.3f}" if accuracy is not None else "")
        )
    for note in _training_notes(model):
        click.echo(note)
    click.echo(f"model written to {model_path}")


def _training_line(model) -> str:
    """Describe what was fitted, where, and how well, in one line."""
    s = model.summary
    parts = [f"{len(model.feature_names)} features, {model.classifier.name}"]
    gpu_workers = s.get("feature_device", {}).get("gpu_workers", 0)
    accuracy = s.get("held_out_accuracy")
    for shown, text in (
        ("trees" in s, f" (XGBoost's random-forest mode, {s.get('trees')} trees)"),
        ("rounds" in s, f", {s.get('rounds')} rounds"),
        (s.get("device") == "cuda", ", fitted on the GPU"),
        (gpu_workers, f", features on {gpu_workers} GPU worker(s)"),
        (model.n_stages > 1, f", {model.n_stages} stages (autocontext)"),
        (accuracy is not None, f", accuracy on held-out strokes {accuracy or 0:.3f}"),
        (s.get("table_from_cache"), " (training table from cache)"),
        (
            s.get("distributed"),
            f", trained on {s.get('training_workers')} dask workers (xgboost.dask)",
        ),
    ):
        if shown:
            parts.append(text)
    return "".join(parts) + f", {s['seconds']:.1f} s"


def _training_notes(model) -> list[str]:
    """Return notes on the scribbles, the spacing and the features kept."""
    s, notes = model.summary, []
    mix = s["labelled_voxels"]
    single = [k for k, n in s.get("strokes", {}).items() if n == 1 and mix.get(k, 0) > 1]
    if single:
        notes.append(
            f"note: one stroke only for class(es) {', '.join(map(str, single))}: the held-out "
            "check used the far end of that stroke; paint a second, separate stroke for a "
            "check that means more"
        )
    hint = s.get("anisotropy")
    if hint:
        ratios = hint["ratios"]
        finest = min(ratios)
        suggestion = ",".join(f"{r / finest:.2g}" for r in ratios)
        notes.append(
            f"hint: no spacing is known for this image, and neighbouring voxels along "
            f"{'/'.join(hint['coarse'])} differ {max(ratios) / finest:.1f}x more than along "
            f"the finest axis: if that axis is coarser, give --spacing (e.g. --spacing "
            f"{suggestion}), so the filters cover the same distance along every axis"
        )
    if "selected_features" in s:
        notes.append(
            f"feature selection: kept {s['selected_features']} of {s['of_features']} features "
            f"({', '.join(f'{f} {v}' for f, v in model.bank.to_dict().items())}); held-out "
            f"accuracy {s['held_out_accuracy_all_features']:.3f} with all, "
            f"{s['held_out_accuracy_selected']:.3f} with the kept ones"
        )
    return notes


@cli.command()
@click.argument("images", nargs=-1, required=True, metavar="IMAGE [IMAGE]...")
@click.option("--model", "model_path", required=True, help="A model file from 'tiledseg train'.")
@click.option("--out", default=None, help="Output OME-Zarr group (OUT.zarr), for one image.")
@click.option(
    "--out-dir",
    default=None,
    metavar="DIR",
    help="For several images (or a glob): DIR/<image stem>.zarr each, in one run.",
)
@model_options(Prediction, Smoothing)
@model_options(ImageInput)
@model_options(Execution)
@click.option("--overwrite", is_flag=True, help="Replace an existing tiledseg output.")
def predict(images, model_path, out, out_dir, overwrite, **options) -> None:
    """Classify every voxel of IMAGE and write OUT.zarr (several images: --out-dir).

    A run that stopped (killed, out of walltime, failed blocks) continues when the
    same command is run again: blocks already written are skipped.
    """
    import tiledseg

    if (out is None) == (out_dir is None):
        raise click.UsageError("give --out OUT.zarr (one image) or --out-dir DIR (several)")
    if out is not None and len(images) > 1:
        raise click.UsageError(f"{len(images)} images: give --out-dir DIR, not --out")
    models = {
        "prediction": take(options, Prediction),
        "smoothing": take(options, Smoothing),
        "image_input": take(options, ImageInput),
        "execution": take(options, Execution),
    }
    if out is None:
        _predict_collection(images, model_path, out_dir, overwrite, models)
        return
    result = tiledseg.predict(
        images[0],
        model_path,
        out=out,
        overwrite=overwrite,
        command=_command_line(),
        **models,
    )
    _print_prediction(result)


def _predict_collection(images, model_path, out_dir, overwrite, models) -> None:
    from tiledseg.collection import predict_collection

    result = predict_collection(
        list(images),
        model_path,
        out_dir=out_dir,
        overwrite=overwrite,
        command=_command_line(),
        **models,
    )
    _print_collection(result)


def _print_collection(result) -> None:
    """Print each image's output, then each failed image; raise when one failed (exit 1)."""
    from tiledseg.errors import BlocksFailedError

    for image, done in result.results.items():
        # (no time per image: their blocks ran side by side)
        click.echo(
            f"{image}: {done.voxels:,} voxels in {done.blocks - done.skipped} blocks; "
            f"written to {done.path}"
        )
    if result.results:
        seconds = max(done.seconds for done in result.results.values())
        voxels = sum(done.voxels for done in result.results.values())
        click.echo(
            f"{len(result.results)} images, {voxels:,} voxels in {seconds:.1f} s "
            f"({voxels / max(seconds, 1e-9) / 1e6:.2f} Mvox/s)"
        )
    for image, path in result.complete.items():
        click.echo(f"{image}: complete already (an earlier run wrote {path})")
    for image, why in result.failed.items():
        click.echo(f"{image}: FAILED: {why}")
    if result.failed:
        others = "the others are" if result.results or result.complete else "none was"
        raise BlocksFailedError(
            f"{len(result.failed)} of "
            f"{len(result.failed) + len(result.results) + len(result.complete)} images failed "
            f"(listed above); {others} written. Fix the cause and rerun the same command: it "
            "redoes only what is not done.",
            [],
        )


def _command_line() -> str:
    """Return the command line as given to :func:`main` (or ``sys.argv``), for the provenance."""
    obj = click.get_current_context().find_root().obj
    args = obj.get("argv") if isinstance(obj, dict) else None
    return shlex.join(["tiledseg", *(sys.argv[1:] if args is None else args)])


def _print_prediction(result) -> None:
    masked = getattr(result, "masked", 0)
    if masked:
        click.echo(f"{masked} of {result.blocks} blocks have no mask voxel: skipped")
    if result.skipped > masked:
        done = result.skipped - masked
        click.echo(f"resumed: {done} of {result.blocks} blocks were already done and skipped")
    click.echo(
        f"{result.voxels:,} voxels in {result.blocks - result.skipped} blocks, "
        f"{result.seconds:.1f} s "
        f"({result.voxels_per_second / 1e6:.2f} Mvox/s); written to {result.path}"
    )


@cli.command()
@click.argument("config_path", metavar="CONFIG.yaml")
@click.option("--overwrite", is_flag=True, help="Replace the model and output if they exist.")
@model_options(Execution, only=["quiet"])
def segment(config_path, overwrite, quiet) -> None:
    """Train, predict and (with 'truth') evaluate from one config file."""
    import tiledseg
    from tiledseg.config import load_config

    config = load_config(config_path)
    # a config's own quiet: true holds; else the command shows its progress
    quiet = quiet or ("quiet" in config.model_fields_set and config.quiet)
    config = config.model_copy(update={"overwrite": overwrite or config.overwrite, "quiet": quiet})

    def announce(model, trained: bool) -> None:
        from tiledseg.runs import unfinished_run

        if trained:
            _print_training(model, config.model)
        elif unfinished_run(config.out) is not None:
            click.echo(
                f"model {config.model} is the model of the unfinished output {config.out}: "
                "training skipped, prediction resumed"
            )
        else:
            click.echo(
                f"model {config.model} made the complete output {config.out}: training and its "
                "prediction skipped, what follows them continued"
            )

    result = tiledseg.segment(config, command=f"tiledseg segment {config_path}", on_model=announce)
    if not result.out_complete:
        _print_prediction(result.prediction)
    if result.scores is not None:
        _print_scores(result.scores, as_json=False)
    if result.objects is not None:
        _print_objects(result.objects)
    if result.collection is not None:
        _print_collection(result.collection)


@cli.command()
@click.argument("image")
@click.option("--out", required=True, help="Output OME-Zarr group (OUT.zarr).")
@model_options(PhaseSearch)
@model_options(Training, only=["features", "seed"])
@model_options(ImageInput, only=["spacing", "channel_axis", "nan_fill"])
@model_options(Execution)
@click.option("--overwrite", is_flag=True, help="Replace an existing tiledseg output.")
def cluster(image, out, overwrite, **options) -> None:
    """Label IMAGE's phases without scribbles (k-means on the features) into OUT.zarr.

    Label 1 is the darkest phase. The phases are the same for any --block or
    --workers; a stopped run continues when the same command runs again.
    """
    from tiledseg.clustering import cluster_phases

    result = cluster_phases(
        image,
        out=out,
        phases=take(options, PhaseSearch),
        training=take(options, Training),
        image_input=take(options, ImageInput),
        execution=take(options, Execution),
        overwrite=overwrite,
        command=_command_line(),
    )
    phases = ", ".join(
        f"{p['label']}: {100 * p['sample_share']:.1f}% (level {p['level']:.4g})"
        for p in result.phases
    )
    click.echo(f"phases (share of the sampled voxels, smoothed intensity): {phases}")
    _print_prediction(result)


@cli.command()
@click.argument("prediction", metavar="PRED.zarr")
@click.option(
    "--out",
    required=True,
    help="Output OME-Zarr labels group (INST.zarr); the table is INST.parquet (or .csv) beside it.",
)
@click.option(
    "--image",
    default=None,
    help="The image whose mean intensity per object the table gives (default: the one the "
    "prediction names).",
)
@model_options(Objects)
@model_options(Execution, exclude=["device"])
@click.option("--overwrite", is_flag=True, help="Replace an existing output and table.")
def instances(prediction, out, image, overwrite, **options) -> None:
    """Label the objects of PRED.zarr's class(es) into INST.zarr, with a table of them.

    Objects know no block borders: the output equals a whole-volume labelling whose objects
    are numbered by their first voxel, whatever --block. A stopped run continues when the
    same command runs again.
    """
    from tiledseg.instances import instances as label_objects

    result = label_objects(
        prediction,
        out=out,
        image=image,
        objects=take(options, Objects),
        execution=take(options, Execution),
        overwrite=overwrite,
        command=_command_line(),
    )
    _print_objects(result)


def _print_objects(result) -> None:
    if result.skipped == result.blocks and not result.seconds:
        click.echo(f"{result.path}: complete already ({result.objects:,} objects)")
        return
    dropped = f" ({result.dropped} under --min-size dropped)" if result.dropped else ""
    table = f"; table {result.table}" if result.table else ""
    click.echo(
        f"{result.objects:,} objects{dropped} in {result.blocks} blocks, {result.seconds:.1f} s; "
        f"written to {result.path}{table}"
    )


# (the block's default here is the prediction's, not predict's)
next(
    p for p in instances.params if p.name == "block"
).help = "Processing block edge(s) in voxels (default: the prediction's block)."


@cli.command()
@click.argument("prediction")
@click.argument("truth")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
def evaluate(prediction, truth, as_json) -> None:
    """Score PREDICTION against dense ground truth TRUTH (0 = not scored)."""
    import tiledseg

    _print_scores(tiledseg.evaluate(prediction, truth), as_json=as_json)


@cli.command("import-ilastik")
@click.argument("project")
@click.option("--labels", required=True, help="The zarr array of scribbles to write (OUT.zarr).")
@click.option("--bank", default=None, help="The feature bank to write (OUT.yaml).")
@click.option(
    "--lane", default=0, show_default=True, type=click.IntRange(min=0),
    help="Which of the project's images (ilastik's lanes, from 0).",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace existing labels and bank files.")
def import_ilastik(project, labels, bank, lane, overwrite) -> None:
    """Write an ilastik PROJECT's scribbles (and feature selection) as tiledseg inputs."""
    from tiledseg.ilastik_import import import_ilastik as run

    found = run(project, labels=labels, bank=bank, lane=lane, overwrite=overwrite)
    for note in found.notes:
        click.echo(f"note: {note}", err=True)
    from pathlib import Path

    missing = found.raw and ":/" not in found.raw and not Path(found.raw).exists()
    where = " (not found here: give the image's path to train)" if missing else ""
    click.echo(f"raw data: {found.raw or '(the project names none)'}{where}")
    click.echo(f"axes: {found.axes} {list(found.shape)} ({found.workflow})")
    for value, voxels in found.voxels.items():
        name = found.names.get(value, "")
        click.echo(f"label {value}: {voxels:,} voxels" + (f" ({name})" if name else ""))
    click.echo(f"written: {found.labels}" + (f", {found.bank}" if found.bank else ""))
    features = f" --features {found.bank}" if found.bank else ""
    channels = f"[channel_axis={found.channel_axis}]" if found.channel_axis is not None else ""
    raw = f"{found.raw or 'RAW'}{channels}"
    raw = f"'{raw}'" if channels else raw  # (quoted: the brackets are the shell's too)
    click.echo(
        f"train: tiledseg train {raw} {found.labels}{features} "
        "--classifier random-forest --model MODEL.tsm"
    )


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
@model_options(ImageInput, only=["channel_axis"])
@click.option("--overwrite", is_flag=True, help="Replace an existing report.")
@model_options(Execution, only=["quiet"])
def report(output, out, truth, image, model_path, channel_axis, overwrite, quiet) -> None:
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
    if quiet:
        return
    for note in result.notes:
        click.echo(f"note: {note}")
    names = ", ".join(p.name for p in result.panels)
    click.echo(f"report written to {result.html} (panels: {names}; pictures in {result.folder})")


@cli.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(path, as_json) -> None:
    """Describe a store (shape, dtype, chunks, axes, spacing) or a model file."""
    from tiledseg.info import describe

    data = describe(path)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif data["kind"] == "model":
        _print_model(data)
    else:
        _print_store(path, data)


def _print_store(path: str, data: dict[str, Any]) -> None:
    for key in ("path", "shape", "axes", "channels", "dtype", "chunks", "spacing", "spacing_from"):
        click.echo(f"{key:>12}: {data[key]}")
    if data.get("metadata"):  # the kind of metadata the layout and spacing came from
        click.echo(f"{'metadata':>12}: {data['metadata']}")
    if "provenance" not in data:
        return
    info = data["provenance"]
    arrays = ", ".join(info.get("arrays", []))
    state = f"complete: {info.get('complete')}"
    if not info.get("complete"):
        from tiledseg.runs import done_blocks

        state += (
            f" ({len(done_blocks(path))} blocks done; the same command again continues the run)"
        )
    click.echo(f"{'output':>12}: {arrays}; {state}")
    if info.get("kind") == "instances":
        _print_objects_store(path, info)
        return
    click.echo(f"{'levels':>12}: {_levels_text(data['shape'], info)}")
    click.echo(f"{'classes':>12}: {info.get('classes')}")
    click.echo(f"{'model':>12}: {info.get('model_checksum')}")
    click.echo(f"{'command':>12}: {info.get('command')}")
    smoothing = info.get("smoothing")
    if smoothing:
        settings = ", ".join(f"{k} {v}" for k, v in smoothing.items() if k != "method")
        click.echo(f"{'smoothing':>12}: {smoothing.get('method')} ({settings})")


def _print_objects_store(path: str, info: dict[str, Any]) -> None:
    """Summarise an instances output: its objects, where they came from, their sizes."""
    from pathlib import Path

    dropped = f" ({info['dropped']} under min_size dropped)" if info.get("dropped") else ""
    click.echo(f"{'objects':>12}: {info.get('objects', '?')}{dropped}")
    identity = info.get("identity") or {}
    click.echo(
        f"{'made of':>12}: classes {identity.get('classes')} of {info.get('prediction')}, "
        f"connectivity {identity.get('connectivity')}"
        + (f", probability >= {identity['threshold']}" if identity.get("threshold") else "")
    )
    if identity.get("split"):
        click.echo(f"{'split':>12}: {identity['split']} (radius {identity['split_radius']:g})")
    for suffix in (".parquet", ".csv"):
        table = Path(path.rstrip("/")).with_suffix(suffix)
        if table.is_file():
            import pandas as pd

            frame = pd.read_parquet(table) if suffix == ".parquet" else pd.read_csv(table)
            if len(frame):
                q = frame["voxels"].quantile([0, 0.5, 1]).astype(int).tolist()
                click.echo(f"{'voxels':>12}: smallest {q[0]}, median {q[1]}, largest {q[2]}")
            click.echo(f"{'table':>12}: {table}")


def _levels_text(shape: list[int], info: dict[str, Any]) -> str:
    """Return the output's multiscale levels (below full resolution) and OME-Zarr version."""
    from tiledseg.pyramid import level_shapes

    levels = int(info.get("levels") or 0)
    ngff = f"OME-Zarr {info.get('ngff', '0.5')}"
    if not levels:
        return f"full resolution only; {ngff}"
    below = ", ".join("x".join(map(str, s)) for s in level_shapes(shape, levels)[1:])
    return f"{levels} below full resolution ({below}); {ngff}"


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
        planar = [
            f if isinstance(f, str) else ", ".join(f"{k} at {v}" for k, v in f.items())
            for f in data["bank"]["in_2d"]
        ]
        click.echo(f"computed in 2D per plane: {', '.join(planar)}")
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
@model_options(Execution, only=["workers", "quiet"])
def demo(out, size, **options) -> None:
    """Make a 3D phantom, train on its scribbles, predict, evaluate, report."""
    from tiledseg.demo import run_demo

    execution = take(options, Execution)
    started = time.perf_counter()
    run_demo(out, size=size, workers=execution.workers, quiet=execution.quiet, echo=click.echo)
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
    except (Exception, KeyboardInterrupt) as exc:
        return _failed(exc, debug=debug)
    return 0


def _failed(exc: BaseException, *, debug: bool) -> int:
    """Print what went wrong as one line; return the exit status.

    2: the input or options are wrong; 1: blocks failed, or an internal error; 130:
    interrupted. With ``--debug`` an error is raised again, for its traceback.
    """
    if isinstance(exc, click.exceptions.Abort | KeyboardInterrupt):
        click.echo("tiledseg: interrupted", err=True)
        return 130
    if isinstance(exc, click.UsageError):  # a wrong option or value: one line, as any error
        where = f"; see tiledseg {exc.ctx.info_name} --help" if exc.ctx is not None else ""
        click.echo(f"tiledseg: error: {exc.format_message()}{where}", err=True)
        return exc.exit_code
    if isinstance(exc, click.ClickException):
        exc.show()
        return exc.exit_code
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code
    if debug:
        raise exc
    if isinstance(exc, TiledsegError):
        click.echo(f"tiledseg: error: {exc}", err=True)
        return getattr(exc, "exit_code", 2)
    if isinstance(exc, PermissionError):  # a path the checks up front could not foresee
        click.echo(
            f"tiledseg: error: permission denied: {exc.filename or exc}; check who may write "
            "there, or choose another path",
            err=True,
        )
        return 2
    if isinstance(exc, OSError):  # a full disk, a read-only or stale file system
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"tiledseg: error: {exc.strerror or exc}{where}", err=True)
        return 1
    click.echo(
        f"tiledseg: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
        "traceback, and please report it)",
        err=True,
    )
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

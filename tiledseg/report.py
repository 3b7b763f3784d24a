"""Pictures of a tiledseg output: an HTML page with PNG panels beside it.

``tiledseg report OUT.zarr --out report.html`` writes ``report.html`` and a folder
``report_files/`` holding one PNG per panel and ``manifest.json`` (the panels, the
titles of their plots, the class colours and the notes):

``slices``
    The middle z, y and x planes of a 3D output (the whole plane of a 2D one): the
    image, the labels over it and, with a truth, the truth over it. Each class has one
    colour in every panel; a legend names the user's class values.
``uncertainty``
    The same planes of ``uncertainty/0``, when the output has one.
``iou`` and ``confusion``
    With a truth: per-class IoU bars and the confusion matrix (rows: truth), from
    :func:`tiledseg.evaluate` (which reads the arrays block by block).
``importance``
    With a model file: the feature importances of its classifier.

Only the planes shown are read: a 3D volume is never loaded whole, and a 2D image
larger than ``max_edge`` pixels along an axis is read with a stride. Everything is
checked before anything is written; the files are made in a temporary folder beside
the report and moved into place at the end. matplotlib (the ``report`` extra) is
imported only here, with the ``Agg`` backend.
"""

from __future__ import annotations

import html as html_lib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiledseg.errors import InputDataError, MissingExtraError, OutputExistsError, TiledsegError
from tiledseg.volume import Volume, open_volume, same_path, split_dataset, split_options

__all__ = [
    "Panel",
    "ReportResult",
    "View",
    "check_report_path",
    "class_colours",
    "is_colour",
    "label_rgba",
    "make_report",
    "middle_views",
    "read_view",
    "report_folder",
    "rgb_picture",
]

#: Marks ``manifest.json`` as a tiledseg report's (only such a folder is replaced).
MANIFEST_KEY = "tiledseg_report"
#: Largest edge, in pixels, of a plane drawn in a panel (larger ones are strided).
MAX_EDGE = 1024
#: Features shown in the importance panel (the most important first).
TOP_FEATURES = 30


@dataclass(frozen=True)
class View:
    """One plane to draw: a spatial region with one axis of length 1 (3D) or none (2D)."""

    name: str
    title: str
    region: tuple[slice, ...]
    #: Index of the axis the plane is cut across (``None`` in 2D).
    axis: int | None
    #: Axis letters of the plane's rows and columns, e.g. ``("y", "x")``.
    axes: tuple[str, str]
    step: int = 1


@dataclass(frozen=True)
class Panel:
    """A PNG of the report: its file name and the titles of its plots."""

    name: str
    file: str
    title: str
    axes: tuple[str, ...]
    size: tuple[int, int]


@dataclass(frozen=True)
class ReportResult:
    """What :func:`make_report` wrote."""

    html: Path
    folder: Path
    panels: list[Panel]
    notes: list[str] = field(default_factory=list)
    scores: dict[str, Any] | None = None


# -- pure helpers ---------------------------------------------------------------------


def middle_views(
    shape: Sequence[int], *, max_edge: int = MAX_EDGE, centre: Sequence[int] | None = None
) -> list[View]:
    """Return the planes a report draws: the middle z, y and x planes in 3D, the image in 2D.

    One stride for every axis (so the aspect is kept) makes the longest edge at most
    ``max_edge``. ``centre`` (e.g. of a predicted region) replaces the volume's middle.
    """
    shape = tuple(int(n) for n in shape)
    step = max(1, math.ceil(max(shape) / max_edge))
    every = slice(None, None, step)
    if len(shape) == 2:
        title = "y, x" + (f" (every {step}th pixel)" if step > 1 else "")
        return [View("yx", title, (every, every), None, ("y", "x"), step)]
    views = []
    for axis, letter in enumerate("zyx"):
        middle = shape[axis] // 2 if centre is None else int(centre[axis])
        region = [every] * 3
        region[axis] = slice(middle, middle + 1)
        rest = tuple(a for a in "zyx" if a != letter)
        title = f"{letter} = {middle}" + (f" (every {step}th voxel)" if step > 1 else "")
        views.append(View(f"{letter}{middle}", title, tuple(region), axis, rest, step))
    return views


def read_view(volume: Volume, view: View, *, colour: bool = False) -> np.ndarray:
    """Read the 2D plane ``view`` of ``volume``, alone.

    Its first channel ``(rows, cols)``, or with ``colour`` its first three
    ``(rows, cols, 3)`` (see :func:`is_colour`).
    """
    data = volume.read(view.region)
    data = data[:3] if colour else data[0]
    if view.axis is not None:
        data = np.take(data, 0, axis=view.axis + int(colour))
    return np.moveaxis(np.asarray(data), 0, -1) if colour else np.asarray(data)


def is_colour(volume: Volume) -> bool:
    """Whether ``volume`` is drawn in colour: 3 (RGB) or 4 (RGBA) channels, uint8 or float."""
    return volume.n_channels in (3, 4) and (volume.dtype == np.uint8 or volume.dtype.kind == "f")


def rgb_picture(plane: np.ndarray) -> np.ndarray:
    """Return a ``(rows, cols, 3)`` plane as RGB that matplotlib draws as it is.

    uint8 stays as stored (0 to 255); floats between 0 and 1 too; other floats are
    stretched between their 1st and 99.5th percentiles, all channels alike. NaN is black.
    """
    if plane.dtype == np.uint8:
        return plane
    plane = np.nan_to_num(plane.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if plane.size and plane.min() >= 0 and plane.max() <= 1:
        return plane
    low, high = _contrast(plane)
    return np.clip((plane - low) / (high - low), 0.0, 1.0)


def class_colours(classes: Sequence[int]) -> dict[int, tuple[float, float, float]]:
    """Return a fixed colour for each class value, by its rank among ``classes``."""
    import matplotlib

    values = sorted({int(c) for c in classes})
    n = len(values)
    if n <= 10:
        palette = list(matplotlib.colormaps["tab10"].colors)
    elif n <= 20:
        palette = list(matplotlib.colormaps["tab20"].colors)
    else:
        cmap = matplotlib.colormaps["hsv"]
        palette = [cmap(i / n)[:3] for i in range(n)]
    return {v: tuple(float(x) for x in palette[i][:3]) for i, v in enumerate(values)}


def object_colours(ids: Any) -> dict[int, tuple[float, float, float]]:
    """Return a colour per object id: hues a golden-ratio step apart, so neighbours differ."""
    import colorsys

    return {
        int(i): colorsys.hsv_to_rgb((int(i) * 0.6180339887) % 1.0, 0.75, 0.95)
        for i in np.unique(np.asarray(ids))
        if i
    }


def label_rgba(
    labels: np.ndarray, colours: dict[int, tuple[float, float, float]], *, alpha: float = 0.5
) -> np.ndarray:
    """Return an RGBA picture of a label plane: each class in its colour, anything else clear."""
    values = np.array(sorted(colours), dtype=np.int64)
    table = np.array([colours[int(v)] for v in values], dtype=float).reshape(-1, 3)
    flat = labels.astype(np.int64)
    index = np.clip(np.searchsorted(values, flat), 0, max(len(values) - 1, 0))
    known = (values[index] == flat) if len(values) else np.zeros(flat.shape, bool)
    rgba = np.zeros((*labels.shape, 4))
    rgba[known, :3] = table[index[known]]
    rgba[known, 3] = alpha
    return rgba


def report_folder(html: str | os.PathLike) -> Path:
    """Return the folder of a report's PNGs: ``report_files`` beside ``report.html``."""
    html = Path(html)
    return html.with_name(f"{html.stem}_files")


def _is_report_folder(folder: Path) -> bool:
    try:
        return MANIFEST_KEY in json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def check_report_path(
    html: str | os.PathLike, *, overwrite: bool, inputs: Sequence[str] = ()
) -> tuple[Path, Path]:
    """Refuse a report path that cannot or may not be written; nothing is changed here.

    Returns
    -------
    (Path, Path)
        The HTML file and the folder of its pictures.
    """
    text, path = str(html), Path(html)
    folder = report_folder(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise OutputExistsError(
            f"report {text!r} is not an .html file; give a path such as report.html"
        )
    for source in inputs:
        if same_path(source, path) or same_path(source, folder):
            raise OutputExistsError(f"report {text!r} is one of the inputs; choose another path")
    parent = path.parent
    if not parent.exists():
        raise OutputExistsError(
            f"the folder of report {text!r} does not exist; create {str(parent)!r} first"
        )
    if not parent.is_dir():
        raise OutputExistsError(f"report {text!r}: {str(parent)!r} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputExistsError(
            f"report {text!r}: folder {str(parent)!r} is not writable; choose another path"
        )
    if path.is_dir():
        raise OutputExistsError(
            f"report {text!r} is a folder; give a file name such as report.html"
        )
    if folder.exists() and not (folder.is_dir() and _is_report_folder(folder)):
        raise OutputExistsError(
            f"{str(folder)!r} (the folder of report {text!r}'s pictures) exists and is not a "
            "tiledseg report's; tiledseg will not delete it, even with --overwrite: choose "
            "another path"
        )
    if not overwrite and (path.exists() or folder.exists()):
        existing = text if path.exists() else str(folder)
        raise OutputExistsError(
            f"report {existing!r} exists; choose another path or pass --overwrite"
        )
    return path, folder


# -- gathering the inputs (checks only) -------------------------------------------------


def _open_output(output: str | os.PathLike) -> tuple[dict[str, Any], Volume]:
    from tiledseg.runs import is_tiledseg_output

    text = str(output)
    if not Path(text).exists():
        raise InputDataError(f"output {text!r} does not exist")
    if not is_tiledseg_output(text):
        raise InputDataError(
            f"{text!r} is not a tiledseg output (no 'tiledseg' provenance); give the OUT.zarr "
            "that 'tiledseg predict' wrote"
        )
    import zarr

    provenance = dict(zarr.open_group(text, mode="r").attrs["tiledseg"])
    labels = open_volume(text, role="prediction", allow_channels=False)
    return provenance, labels


def _open_image(
    image: str | None,
    provenance: dict[str, Any],
    labels: Volume,
    *,
    channel_axis: int | None,
    model_channel_axis: int | None,
    notes: list[str],
) -> Volume | None:
    if image is not None:
        volume = open_volume(image, channel_axis=channel_axis)
        _same_shape(volume, labels, "image")
        return volume
    stored = provenance.get("image")
    if not isinstance(stored, str) or not Path(split_dataset(split_options(stored)[0])[0]).exists():
        notes.append(
            f"image {stored!r} of the provenance is not readable here; labels are drawn alone "
            "(give --image)"
        )
        return None
    for axis in dict.fromkeys([channel_axis, model_channel_axis]):
        try:
            volume = open_volume(stored, channel_axis=axis)
        except (TiledsegError, OSError):
            continue
        if volume.shape == labels.shape:
            return volume
    notes.append(
        f"image {stored!r} of the provenance could not be opened with the labels' shape "
        f"{labels.shape}; labels are drawn alone (give --image and --channel-axis)"
    )
    return None


def _same_shape(volume: Volume, labels: Volume, role: str) -> None:
    if volume.shape != labels.shape:
        raise InputDataError(
            f"{role} {volume.name} has spatial shape {volume.shape} but the output's labels "
            f"{labels.name} have {labels.shape}; they must match"
        )


def _import_pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(
            "tiledseg report draws with matplotlib, which is not installed: "
            "pip install 'tiledseg[report]'"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# -- drawing --------------------------------------------------------------------------


def _contrast(plane: np.ndarray) -> tuple[float, float]:
    finite = plane[np.isfinite(plane)] if plane.dtype.kind == "f" else plane
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, [1, 99.5]))
    return (low, high) if high > low else (low, low + 1.0)


def _aspect(view: View, spacing: Sequence[float]) -> float:
    letters = "zyx"[-len(spacing) :]
    row, col = (spacing[letters.index(a)] for a in view.axes)
    return float(row / col) if col else 1.0


def _save(fig, folder: Path, name: str, title: str) -> Panel:
    titles = tuple(ax.get_title() for ax in fig.axes if ax.get_title())
    file = f"{name}.png"
    fig.savefig(folder / file, dpi=100)
    width, height = (int(round(v)) for v in fig.get_size_inches() * 100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return Panel(name, file, title, titles, (width, height))


def _legend(fig, colours: dict[int, tuple[float, float, float]]) -> None:
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=c, edgecolor="black", label=f"class {v}") for v, c in colours.items()
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(handles), 8),
        frameon=False,
        handlelength=2.5,
        handleheight=1.5,
    )


def _draw_slices(plt, planes, views, spacing, colours, folder: Path, *, legend=True) -> Panel:
    rows = list(planes)
    ncols = len(views)
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(4 * ncols, 3.6 * len(rows) + 0.8), squeeze=False
    )
    image_planes = planes.get("image")
    for r, row in enumerate(rows):
        for c, view in enumerate(views):
            ax = axes[r][c]
            aspect = _aspect(view, spacing)
            if image_planes is not None:
                _draw_image(ax, image_planes[c], aspect)
            if row != "image":
                ax.imshow(
                    label_rgba(
                        planes[row][c], colours, alpha=0.5 if image_planes is not None else 1
                    ),
                    aspect=aspect,
                    interpolation="nearest",
                )
            _label_plane(ax, view, f"{row}, {view.title}")
    if legend:
        _legend(fig, colours)
    fig.tight_layout(rect=(0, 0.8 / (3.6 * len(rows) + 0.8), 1, 1))
    title = "middle planes: " + ", ".join(rows)
    return _save(fig, folder, "slices", title)


def _draw_image(ax, plane: np.ndarray, aspect: float) -> None:
    """Draw an image plane: grey with a contrast stretch, or in colour (``(rows, cols, 3)``)."""
    if plane.ndim == 3:
        ax.imshow(rgb_picture(plane), aspect=aspect, interpolation="nearest")
        return
    low, high = _contrast(plane)
    ax.imshow(plane, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")


def _label_plane(ax, view, title: str) -> None:
    """Title and axis letters of a drawn plane; no ticks (voxel indices say nothing here)."""
    ax.set_title(title)
    ax.set_ylabel(view.axes[0])
    ax.set_xlabel(view.axes[1])
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_uncertainty(plt, planes, views, spacing, folder: Path) -> Panel:
    fig, axes = plt.subplots(1, len(views), figsize=(4 * len(views) + 0.6, 3.8), squeeze=False)
    shown = None
    for c, view in enumerate(views):
        ax = axes[0][c]
        shown = ax.imshow(
            planes[c] / 255.0,
            cmap="magma",
            vmin=0,
            vmax=1,
            aspect=_aspect(view, spacing),
            interpolation="nearest",
        )
        _label_plane(ax, view, f"uncertainty, {view.title}")
    fig.colorbar(shown, ax=list(axes[0]), label="1 - (p_best - p_second)", shrink=0.8)
    return _save(fig, folder, "uncertainty", "uncertainty (1 - margin of the two best classes)")


def _draw_iou(plt, scores: dict[str, Any], colours, folder: Path) -> Panel:
    values = list(scores["iou"])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(values) + 2), 3.6))
    ious = [scores["iou"][v] for v in values]
    bars = ax.bar([str(v) for v in values], ious, color=[colours[v] for v in values])
    for bar, iou in zip(bars, ious, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, iou + 0.01, f"{iou:.3f}", ha="center")
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("class")
    ax.set_ylabel("IoU")
    ax.set_title(f"per-class IoU (mean {scores['mean_iou']:.3f})")
    fig.tight_layout()
    return _save(fig, folder, "iou", "per-class IoU against the truth")


def _draw_confusion(plt, scores: dict[str, Any], folder: Path) -> Panel:
    classes = scores["classes"]
    matrix = np.asarray(scores["confusion"], dtype=np.int64)
    rows = matrix.sum(1, keepdims=True)
    fraction = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    edge = max(3.6, 0.8 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(edge + 1, edge))
    shown = ax.imshow(fraction, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{matrix[i, j]:,}",
                ha="center",
                va="center",
                color="white" if fraction[i, j] > 0.5 else "black",
                fontsize=8 if len(classes) > 6 else 10,
            )
    ax.set_xticks(range(len(classes)), [str(c) for c in classes])
    ax.set_yticks(range(len(classes)), [str(c) for c in classes])
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    ax.set_title(f"confusion (accuracy {scores['accuracy']:.3f})")
    fig.colorbar(shown, ax=ax, label="fraction of the truth class")
    fig.tight_layout()
    return _save(fig, folder, "confusion", "confusion matrix: voxel counts (rows: truth)")


def _draw_importance(plt, names: list[str], importance: list[float], folder: Path) -> Panel:
    order = np.argsort(importance)[::-1][:TOP_FEATURES]
    shown = [names[i] for i in order][::-1]
    values = [importance[i] for i in order][::-1]
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(shown) + 1.2))
    ax.barh(range(len(shown)), values, color="tab:blue")
    ax.set_yticks(range(len(shown)), shown, fontsize=8)
    ax.set_xlabel("importance")
    more = f" (top {len(shown)} of {len(names)})" if len(names) > len(shown) else ""
    ax.set_title(f"feature importance{more}")
    fig.tight_layout()
    return _save(fig, folder, "importance", "feature importances of the model's classifier")


# -- the report -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Drawn:
    """The opened arrays and scores a report draws from (``None`` where absent)."""

    labels: Volume
    image: Volume | None
    truth: Volume | None
    uncertainty: Volume | None
    scores: dict[str, Any] | None
    described: dict[str, Any] | None
    #: an instances output's object sizes (voxels, from its table), or ``None``
    sizes: np.ndarray | None = None

    @property
    def objects(self) -> bool:
        """Whether the labels are objects (``tiledseg instances``), each its own colour."""
        return self.sizes is not None


def make_report(
    output: str | os.PathLike,
    *,
    out: str | os.PathLike,
    truth: Any = None,
    image: Any = None,
    model: str | os.PathLike | None = None,
    channel_axis: int | None = None,
    overwrite: bool = False,
    max_edge: int = MAX_EDGE,
) -> ReportResult:
    """Write an HTML report of a tiledseg output, with PNG panels beside it.

    Parameters
    ----------
    output : path
        A tiledseg output group (``OUT.zarr``).
    out : path
        The HTML file; the PNGs and ``manifest.json`` go to ``<stem>_files/`` beside it.
    truth : path or array, optional
        Dense ground truth (0 = not scored): adds the truth overlay, IoU and confusion.
    image : path or array, optional
        The image under the labels (default: the provenance's image, when readable).
    model : path, optional
        A model file: adds its feature importances.
    channel_axis : int, optional
        Channel axis of ``image`` (an RGB(A) image of uint8 or floats is drawn in colour,
        another the first channel).
    overwrite : bool
        Replace an existing report (only one tiledseg made).
    max_edge : int
        Longest edge of a drawn plane; larger planes are read with a stride.

    Returns
    -------
    ReportResult
        The files written, the panels, the notes and the scores against ``truth``.
    """
    notes: list[str] = []
    provenance, labels = _open_output(output)
    inputs = [str(output)] + [str(p) for p in (truth, image, model) if isinstance(p, str | Path)]
    html_path, folder = check_report_path(out, overwrite=overwrite, inputs=inputs)
    plt = _import_pyplot()
    drawn = _open_inputs(
        output, provenance, labels, truth=truth, image=image, model=model,
        channel_axis=channel_axis, notes=notes,
    )  # fmt: skip
    classes = [int(c) for c in provenance.get("classes", [])]
    if drawn.scores is not None:
        classes += [c for c in drawn.scores["classes"] if c not in classes]
    colours = class_colours(classes) if not drawn.objects else {}
    centre = _roi_centre(provenance.get("roi"), notes)
    views = middle_views(labels.shape, max_edge=max_edge, centre=centre)
    if views[0].step > 1:
        notes.append(f"planes drawn with every {views[0].step}th voxel along each axis")

    work = _work_folder(html_path, out)
    try:
        pictures = work / folder.name
        pictures.mkdir()
        panels = _draw_panels(plt, drawn, views, colours, pictures)
        _write_manifest(
            pictures, html=html_path.name, output=output, panels=panels, classes=classes,
            colours=colours, notes=notes,
        )  # fmt: skip
        rows = _summary_rows(
            output, provenance, labels, drawn.image, drawn.scores, drawn.described, model
        )
        page = _html_page(output, folder.name, panels, rows, notes, colours)
        (work / html_path.name).write_text(page, encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(pictures, folder)
        os.replace(work / html_path.name, html_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ReportResult(html_path, folder, panels, notes, drawn.scores)


def _open_inputs(
    output: str | os.PathLike,
    provenance: dict[str, Any],
    labels: Volume,
    *,
    truth: Any,
    image: Any,
    model: str | os.PathLike | None,
    channel_axis: int | None,
    notes: list[str],
) -> _Drawn:
    """Open (and check) everything drawn beside the labels, in the order errors are raised."""
    loaded, described = _load_report_model(model, provenance, notes)
    volume = _open_image(
        image,
        provenance,
        labels,
        channel_axis=channel_axis,
        model_channel_axis=None if loaded is None else loaded.channel_axis,
        notes=notes,
    )
    truth_volume, scores = None, None
    if truth is not None:
        truth_volume = open_volume(truth, role="truth", allow_channels=False)
        _same_shape(truth_volume, labels, "truth")
        import tiledseg

        scores = tiledseg.evaluate(labels, truth_volume)
    uncertainty = None
    if "uncertainty" in provenance.get("arrays", []):
        uncertainty = open_volume(f"{str(output).rstrip('/')}/uncertainty", role="uncertainty")
    if not provenance.get("complete", True):
        notes.append("the run is not complete: blocks not yet predicted are blank")
    sizes = _object_sizes(output, provenance, notes)
    if volume is not None and volume.n_channels > 1:
        how = "drawn in colour (RGB)" if is_colour(volume) else "channel 0 is drawn"
        notes.append(f"image has {volume.n_channels} channels; {how}")
    return _Drawn(labels, volume, truth_volume, uncertainty, scores, described, sizes)


def _object_sizes(output: Any, provenance: dict[str, Any], notes: list[str]) -> Any:
    """Return an instances output's object sizes from its table (``None``: not objects)."""
    if provenance.get("kind") != "instances":
        return None
    notes.append("each object is drawn in its own colour")
    for suffix in (".parquet", ".csv"):
        table = Path(str(output).rstrip("/")).with_suffix(suffix)
        if table.is_file():
            import pandas as pd

            frame = pd.read_parquet(table) if suffix == ".parquet" else pd.read_csv(table)
            return frame["voxels"].to_numpy()
    notes.append("no objects table beside the output: no size distribution")
    return np.zeros(0, np.int64)


def _load_report_model(
    model: str | os.PathLike | None, provenance: dict[str, Any], notes: list[str]
) -> tuple[Any, dict[str, Any] | None]:
    """Load the model and describe it; return ``(None, None)`` without one."""
    if model is None:
        if provenance.get("kind") != "instances":  # (objects have no features to show)
            notes.append("no model given (--model): no feature importances")
        return None, None
    from tiledseg.model import load_model

    loaded = load_model(model)
    described = loaded.describe()
    if provenance.get("model_checksum") not in (None, loaded.checksum):
        notes.append(
            f"model {str(model)!r} is not the model that made this output (checksums differ)"
        )
    if "importance" not in described:
        notes.append(f"model {str(model)!r} reports no feature importances")
    return loaded, described


def _roi_centre(roi: Sequence[Sequence[int]] | None, notes: list[str]) -> list[int] | None:
    """Return the middle of the predicted region, where the planes are drawn (``None``: none)."""
    if not roi:
        return None
    where = ", ".join(
        f"{a} {start}:{stop}" for a, (start, stop) in zip("zyx"[-len(roi) :], roi, strict=True)
    )
    notes.append(
        f"only the blocks meeting the region {where} were predicted (--roi): the rest "
        "of the output is 0 (blank, and uncertainty 0), and is not scored"
    )
    return [(start + stop) // 2 for start, stop in roi]


def _work_folder(html_path: Path, out: str | os.PathLike) -> Path:
    """Make a temporary folder beside the report, so the final moves stay on one file system."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{html_path.stem}-report-", dir=html_path.parent))
    except OSError as exc:
        raise OutputExistsError(
            f"report {str(out)!r}: cannot create files in {str(html_path.parent)!r} "
            f"({exc.strerror}); choose another path"
        ) from None


def _draw_panels(
    plt: Any, drawn: _Drawn, views: list[View], colours: dict[int, Any], pictures: Path
) -> list[Panel]:
    """Draw every panel the inputs allow into ``pictures``; the slices always."""
    spacing = drawn.labels.spacing
    planes: dict[str, list[np.ndarray]] = {}
    if drawn.image is not None:
        colour = is_colour(drawn.image)
        planes["image"] = [read_view(drawn.image, v, colour=colour) for v in views]
    planes["labels"] = [read_view(drawn.labels, v) for v in views]
    if drawn.truth is not None:
        planes["truth"] = [read_view(drawn.truth, v) for v in views]
    if drawn.objects:
        shown = object_colours(np.concatenate([p.ravel() for p in planes["labels"]]))
        panels = [_draw_slices(plt, planes, views, spacing, shown, pictures, legend=False)]
        if len(drawn.sizes):
            panels.append(_draw_sizes(plt, drawn.sizes, pictures))
        return panels
    panels = [_draw_slices(plt, planes, views, spacing, colours, pictures)]
    if drawn.uncertainty is not None:
        planes_u = [read_view(drawn.uncertainty, v) for v in views]
        panels.append(_draw_uncertainty(plt, planes_u, views, spacing, pictures))
    if drawn.scores is not None:
        panels.append(_draw_iou(plt, drawn.scores, colours, pictures))
        panels.append(_draw_confusion(plt, drawn.scores, pictures))
    described = drawn.described
    if described is not None and "importance" in described:
        panels.append(
            _draw_importance(plt, described["features"], described["importance"], pictures)
        )
    return panels


def _draw_sizes(plt, sizes: np.ndarray, folder: Path) -> Panel:
    """Draw the distribution of the objects' sizes (voxels), on logarithmic bins."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    top = max(int(sizes.max()), 2)
    bins = np.unique(np.geomspace(1, top + 1, num=min(40, top + 1)).astype(int))
    ax.hist(sizes, bins=bins, color="#4477aa")
    ax.set_xscale("log")
    ax.set_xlabel("voxels per object")
    ax.set_ylabel("objects")
    ax.set_title(f"{len(sizes):,} objects, median {int(np.median(sizes)):,} voxels")
    fig.tight_layout()
    return _save(fig, folder, "sizes", "object sizes")


def _write_manifest(
    pictures: Path,
    *,
    html: str,
    output: str | os.PathLike,
    panels: list[Panel],
    classes: list[int],
    colours: dict[int, Any],
    notes: list[str],
) -> None:
    """Write ``manifest.json``: the panels, the titles of their plots, the colours, the notes."""
    manifest = {
        MANIFEST_KEY: 1,
        "html": html,
        "output": str(output),
        "panels": [
            {
                "name": p.name,
                "file": p.file,
                "title": p.title,
                "axes": list(p.axes),
                "size": list(p.size),
            }
            for p in panels
        ],
        "classes": classes,
        "colours": {str(v): _hex(c) for v, c in colours.items()},
        "notes": notes,
    }
    (pictures / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _hex(colour: Sequence[float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in colour[:3])


def _summary_rows(output, provenance, labels, volume, scores, described, model) -> list:
    rows: list[tuple[str, Any]] = [
        ("output", str(output)),
        ("shape", " x ".join(str(n) for n in labels.shape)),
        ("spacing", ", ".join(f"{s:g}" for s in labels.spacing)),
        ("classes", ", ".join(str(c) for c in provenance.get("classes", []))),
        ("objects", provenance.get("objects")),
        ("arrays", ", ".join(provenance.get("arrays", []))),
        ("complete", provenance.get("complete")),
        ("image", volume.name if volume is not None else f"{provenance.get('image')} (not drawn)"),
        ("model checksum", provenance.get("model_checksum")),
        ("command", provenance.get("command")),
        ("created", provenance.get("created")),
        ("finished", provenance.get("finished")),
    ]
    smoothing = provenance.get("smoothing")
    if smoothing:
        rows.append(("smoothing", ", ".join(f"{k} {v}" for k, v in smoothing.items())))
    if scores is not None:
        rows += [
            ("accuracy", f"{scores['accuracy']:.4f}"),
            ("mean IoU", f"{scores['mean_iou']:.4f}"),
            ("scored voxels", f"{scores['scored_voxels']:,}"),
            ("unpredicted voxels", f"{scores.get('unpredicted_voxels', 0):,}"),
        ]
    if described is not None:
        summary = described.get("summary", {})
        rows += [
            ("model", f"{model} ({described['classifier']}, {len(described['features'])} features)")
        ]
        if "held_out_accuracy" in summary:
            rows.append(("held-out scribble accuracy", f"{summary['held_out_accuracy']:.4f}"))
    return [(k, v) for k, v in rows if v is not None]


_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; }
table.summary { border-collapse: collapse; margin-bottom: 1em; }
table.summary th, table.summary td { border: 1px solid #ccc; padding: 3px 8px; text-align: left;
  vertical-align: top; }
table.summary th { background: #f3f3f3; }
span.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #000;
  vertical-align: middle; margin-right: 0.3em; }
section img { max-width: 100%; }
ul.notes { color: #805000; }
"""


def _html_page(output, folder_name, panels, rows, notes, colours) -> str:
    esc = html_lib.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>tiledseg report: {esc(str(output))}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>tiledseg report: {esc(Path(str(output)).name)}</h1>",
        '<table class="summary">',
    ]
    parts += [f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in rows]
    parts.append("</table>")
    legend = " ".join(
        f'<span class="swatch" style="background:{_hex(c)}"></span>class {v}'
        for v, c in colours.items()
    )
    parts.append(f'<p class="legend">{legend}</p>')
    if notes:
        parts.append('<ul class="notes">')
        parts += [f"<li>{esc(n)}</li>" for n in notes]
        parts.append("</ul>")
    for panel in panels:
        src = f"{folder_name}/{panel.file}"
        parts += [
            f'<section id="panel-{panel.name}" data-panel="{panel.name}">',
            f"<h2>{esc(panel.title)}</h2>",
            f'<img src="{esc(src)}" alt="{esc(panel.title)}">',
            "<p>" + esc("; ".join(panel.axes)) + "</p>",
            "</section>",
        ]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)

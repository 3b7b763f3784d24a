"""The napari dock widget: train on a Labels layer of scribbles, preview, segment all.

Pick the image layer and the scribbles layer, the feature bank (a named bank, or a bank
file) and the classifier; "Train" trains in a worker thread (napari's activity dock shows
it), then previews the plane being shown: its labels and uncertainty, as two 2D layers
placed over the image, computed again whenever the plane changes (with "live preview"
on). "Segment all" predicts the whole image into OME-Zarr (on threads, or on a cluster
config's workers) and opens the labels and uncertainty lazily as layers. The model file
is saved and loaded with the two buttons beside its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari.viewer  # (this module is napari's door: napari alone imports it)
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    PushButton,
    create_widget,
)

from tiledseg.napari.session import Preview, Session, lazy_outputs

__all__ = ["TiledsegWidget"]

PREVIEW, UNCERTAINTY = "tiledseg preview", "tiledseg preview uncertainty"


class TiledsegWidget(Container):
    """Scribbles in, a trained model, a live preview and a whole segmentation out."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from tiledseg.classifiers import CLASSIFIERS, DEFAULT_CLASSIFIER
        from tiledseg.features.bank import NAMED_BANKS

        super().__init__(labels=True)
        self.viewer = viewer
        self.session = Session()
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        self.scribbles = create_widget(annotation="napari.layers.Labels", label="scribbles")
        self.features = ComboBox(label="features", choices=list(NAMED_BANKS), value="default")
        self.bank_file = FileEdit(label="or bank file", mode="r", filter="*.yaml")
        self.classifier = ComboBox(
            label="classifier", choices=list(CLASSIFIERS), value=DEFAULT_CLASSIFIER
        )
        self.live = CheckBox(label="live preview", value=True)
        self.train_button = PushButton(text="Train")
        self.out = FileEdit(label="output", mode="w", filter="*.zarr")
        self.cluster = LineEdit(label="cluster (optional)")
        self.segment_button = PushButton(text="Segment all")
        self.model_path = FileEdit(label="model file", mode="w", filter="*.tsm")
        self.overwrite = CheckBox(label="replace existing files", value=False)
        self.save_button = PushButton(text="Save model")
        self.load_button = PushButton(text="Load model")
        self.status = Label(value="paint scribbles in a Labels layer, then Train")
        self.extend(
            [
                self.image, self.scribbles, self.features, self.bank_file, self.classifier,
                self.live, self.train_button, self.out, self.cluster, self.segment_button,
                self.model_path, self.overwrite, self.save_button, self.load_button,
                self.status,
            ]
        )  # fmt: skip
        self.train_button.changed.connect(self.train)
        self.segment_button.changed.connect(self.segment_all)
        self.save_button.changed.connect(self.save_model)
        self.load_button.changed.connect(self.load_model)
        self.viewer.dims.events.current_step.connect(self._plane_changed)
        self._busy = False
        self._pending = False
        self._training = False
        self.last_preview: Preview | None = None
        #: the workers started and not finished (a test, or a caller, waits on it)
        self.running: set[Any] = set()

    # -- what the buttons do ----------------------------------------------------------
    def train(self) -> Any:
        """Train on the chosen layers in a worker thread; preview when done."""
        image, scribbles = self._layer(self.image), self._layer(self.scribbles)
        if image is None or scribbles is None:
            return self._say("choose an image layer and a Labels layer of scribbles")
        if self._training:
            return self._say("a training is running; wait for it")
        bank = _path(self.bank_file.value)
        self._say("training...")
        self._training = True
        return self._start(
            self.session.train, self._trained, "tiledseg: training",
            _data(image), _data(scribbles), features=str(bank) if bank else self.features.value,
            classifier=self.classifier.value, spacing=_spacing(image),
            channel_axis=-1 if image.rgb else None, _done=self._training_over,
        )  # fmt: skip

    def preview(self) -> Any:
        """Predict the plane being shown (the whole of a 2D image) in a worker thread."""
        image = self._layer(self.image)
        if image is None or self.session.model is None:
            return None
        if self._busy:  # (one at a time; the latest plane is predicted after it)
            self._pending = True
            return None
        self._busy = True
        return self._start(
            self.session.preview, lambda p: self._show_preview(p, image), "tiledseg: preview",
            _data(image),
            plane=self._plane(image), spacing=_spacing(image),
            channel_axis=-1 if image.rgb else None, _done=self._preview_over,
        )  # fmt: skip

    def segment_all(self) -> Any:
        """Predict the whole image into the output (OME-Zarr), then open it as layers."""
        image, out = self._layer(self.image), _path(self.out.value)
        if image is None or out is None:
            return self._say("choose an image layer and an output path (OUT.zarr)")
        self._say(f"segmenting into {out}...")
        return self._start(
            self.session.segment_all, lambda r: self._segmented(r, image),
            "tiledseg: segment all", _data(image),
            str(out), cluster=self.cluster.value.strip() or None, spacing=_spacing(image),
            channel_axis=-1 if image.rgb else None, overwrite=self.overwrite.value,
        )  # fmt: skip

    def save_model(self) -> None:
        """Write the model to the model file path."""
        path = _path(self.model_path.value)
        if path is None:
            return self._say("give the model file's path")
        self._guarded(
            lambda: self.session.save(path, overwrite=self.overwrite.value),
            f"model saved to {path}",
        )

    def load_model(self) -> Any:
        """Read the model file; preview with it (return the preview's worker)."""
        path = _path(self.model_path.value)
        if path is None:
            return self._say("give the model file's path")
        loaded = self._guarded(lambda: self.session.load(path), f"model loaded from {path}")
        return self.preview() if loaded and self.live.value else None

    # -- results ----------------------------------------------------------------------
    def _trained(self, model: Any) -> None:
        voxels = model.summary.get("labelled_voxels", {})
        self._say(f"trained on {sum(voxels.values()):,} scribbled voxels, {len(voxels)} classes")
        if self.live.value:
            self.preview()

    def _show_preview(self, preview: Preview, image: Any) -> None:
        self.last_preview = preview
        scale, translate = tuple(image.scale)[-2:], tuple(image.translate)[-2:]
        for name, data, kind in (
            (PREVIEW, preview.labels, "labels"), (UNCERTAINTY, preview.uncertainty, "image"),
        ):  # fmt: skip
            if name in self.viewer.layers:
                self.viewer.layers[name].data = data
                continue
            add = self.viewer.add_labels if kind == "labels" else self.viewer.add_image
            extra = (
                {"opacity": 0.5} if kind == "labels" else {"colormap": "magma", "visible": False}
            )
            add(data, name=name, scale=scale, translate=translate, **extra)
        where = "" if preview.plane is None else f" of plane {preview.plane}"
        self._say(f"preview{where} in {preview.seconds:.2f} s")

    def _training_over(self) -> None:
        self._training = False

    def _preview_over(self) -> None:
        self._busy = False
        if self._pending:
            self._pending = False
            self.preview()

    def _segmented(self, result: Any, image: Any) -> None:
        arrays = lazy_outputs(result.path)
        scale, translate = tuple(image.scale), tuple(image.translate)
        self.viewer.add_labels(
            arrays["labels"], name=f"{Path(result.path).stem} labels", scale=scale,
            translate=translate,
        )  # fmt: skip
        if "uncertainty" in arrays:
            self.viewer.add_image(
                arrays["uncertainty"], name=f"{Path(result.path).stem} uncertainty",
                scale=scale, translate=translate, colormap="magma", visible=False,
            )  # fmt: skip
        self._say(f"segmented {result.blocks} blocks into {result.path}")

    # -- plumbing ---------------------------------------------------------------------
    def _plane_changed(self, event: Any = None) -> None:
        image = self._layer(self.image)
        if not self.live.value or image is None or image.ndim < 3:
            return
        if self.last_preview is None or self.last_preview.plane != self._plane(image):
            self.preview()

    def _plane(self, image: Any) -> int | None:
        """Return the z index (in the image's data) of the plane being shown, for a volume."""
        if image.ndim < 3:
            return None
        axis = image.ndim - 3  # (data axes: z, y, x last, then an RGB axis if any)
        z = image.world_to_data(self.viewer.dims.point)[axis]
        return int(min(max(round(z), 0), _data(image).shape[axis] - 1))

    def _layer(self, chooser: Any) -> Any:
        chooser.reset_choices()
        return chooser.value

    def _start(self, func: Any, done: Any, desc: str, *args: Any, _done: Any = None, **kw: Any):
        """Run ``func`` in a worker thread; ``done`` gets its result, errors the status line."""
        from napari.qt.threading import create_worker

        worker: Any = None
        finished = [lambda: self.running.discard(worker)] + ([_done] if _done else [])
        connect = {"returned": done, "errored": self._failed, "finished": finished}
        worker = create_worker(
            func, *args, _progress={"desc": desc}, _connect=connect, _start_thread=False, **kw
        )
        self.running.add(worker)
        worker.start()
        return worker

    def _failed(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self._say(f"error: {exc}")
        show_error(f"tiledseg: {exc}")

    def _guarded(self, action: Any, success: str) -> bool:
        from tiledseg.errors import TiledsegError

        try:
            action()
        except (TiledsegError, OSError) as exc:
            self._failed(exc)
            return False
        self._say(success)
        return True

    def _say(self, text: str) -> None:
        self.status.value = text


def _data(layer: Any) -> Any:
    """Return a layer's array (its full resolution when it is multiscale), never copied."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def _spacing(layer: Any) -> tuple[float, ...]:
    """Return the layer's scale (the spacing tiledseg computes features at; RGB has none)."""
    return tuple(float(s) for s in layer.scale)


def _path(value: Any) -> Path | None:
    """Return a FileEdit's path, or ``None`` when it is empty."""
    text = str(value or "").strip()
    return None if text in ("", ".") else Path(text)

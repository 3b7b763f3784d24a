"""What the napari plugin does, without Qt: train on layers, preview a plane, segment all.

The widget (:mod:`tiledseg.napari.widget`) calls these from worker threads. Layers' data
are passed as they are (numpy, dask or zarr arrays): tiledseg reads blocks of them and
never copies a volume whole. A preview computes one plane (with the model's halo around
it) through the same per-block kernel a prediction runs, so it equals the plane of a
whole prediction, voxel for voxel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiledseg.errors import TiledsegError

__all__ = ["Preview", "Session"]


@dataclass(frozen=True)
class Preview:
    """The labels and uncertainty of the plane (or the 2D image) a preview computed."""

    #: the plane's index along z (``None`` for a 2D image)
    plane: int | None
    labels: np.ndarray
    uncertainty: np.ndarray
    seconds: float


class Session:
    """One user's work in the viewer: the model trained (or loaded) and what it makes."""

    def __init__(self) -> None:
        self.model: Any = None

    def train(
        self,
        image: Any,
        scribbles: Any,
        *,
        features: str = "default",
        classifier: str = "random-forest",
        spacing: tuple[float, ...] | None = None,
        channel_axis: int | None = None,
    ) -> Any:
        """Train on the scribbles (0: unlabelled) of ``image``; keep and return the model."""
        import tiledseg

        self.model = tiledseg.train(
            image, scribbles, features=features, classifier=classifier, spacing=spacing,
            channel_axis=channel_axis, cache_dir=None, quiet=True,
        )  # fmt: skip
        return self.model

    def preview(
        self,
        image: Any,
        *,
        plane: int | None = None,
        spacing: tuple[float, ...] | None = None,
        channel_axis: int | None = None,
    ) -> Preview:
        """Return the labels and uncertainty of a volume's plane ``plane`` (z), or a 2D image's."""
        import time

        from tiledseg.predict import volume_for_model

        started = time.perf_counter()
        # (the checks a prediction makes: dimensionality, channels, spacing)
        volume, model = volume_for_model(
            image, self._require_model(), channel_axis=channel_axis, spacing=spacing
        )
        if volume.ndim == 3:
            if plane is None or not 0 <= plane < volume.shape[0]:
                raise TiledsegError(
                    f"plane {plane} is not one of the volume's 0..{volume.shape[0] - 1}"
                )
            region = (slice(plane, plane + 1), *(slice(0, n) for n in volume.shape[1:]))
        else:
            plane, region = None, tuple(slice(0, n) for n in volume.shape)
        labels, uncertainty = _bands(volume, model, region)
        if volume.ndim == 3:
            labels, uncertainty = labels[0], uncertainty[0]
        return Preview(plane, labels, uncertainty, time.perf_counter() - started)

    def segment_all(
        self,
        image: Any,
        out: str | os.PathLike,
        *,
        cluster: str | None = None,
        spacing: tuple[float, ...] | None = None,
        channel_axis: int | None = None,
        overwrite: bool = False,
    ) -> Any:
        """Predict the whole image into OME-Zarr ``out`` (labels and uncertainty)."""
        import tiledseg

        model = self._require_model()
        return tiledseg.predict(
            image, model, out=out, uncertainty=True, cluster=cluster or None, spacing=spacing,
            channel_axis=channel_axis, overwrite=overwrite, quiet=True,
        )  # fmt: skip

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the model file (an existing one only with ``overwrite``)."""
        self._require_model().save(path, overwrite=overwrite)

    def load(self, path: str | os.PathLike) -> Any:
        """Read a model file; it replaces the session's model."""
        from tiledseg.model import load_model

        self.model = load_model(Path(path))
        return self.model

    def _require_model(self) -> Any:
        if self.model is None:
            raise TiledsegError("no model yet: train one (or load a model file) first")
        return self.model


def _bands(volume: Any, model: Any, region: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Return the labels and uncertainty of ``region``, in bands of rows on every core.

    Tiled features equal untiled ones bit for bit, so the bands give what one block would.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tiledseg.blocks import Block, haloed
    from tiledseg.prediction_job import classify_block, uncertainty

    rows = region[-2]
    count = max(1, min(os.cpu_count() or 1, (rows.stop - rows.start) // 64))
    edges = np.linspace(rows.start, rows.stop, count + 1).astype(int)
    bands = [
        (*region[:-2], slice(a, b), region[-1]) for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]

    def one(band: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
        block = Block((0,) * len(band), band, haloed(band, model.halo, volume.shape))
        labels, proba = classify_block(volume, block, model, n_threads=1)
        return np.asarray(labels), uncertainty(proba).reshape(block.shape).astype(np.float32)

    with ThreadPoolExecutor(count) as pool:
        done = list(pool.map(one, bands))
    axis = len(region) - 2
    return (np.concatenate([d[0] for d in done], axis=axis),
            np.concatenate([d[1] for d in done], axis=axis))  # fmt: skip


def lazy_outputs(out: str | os.PathLike) -> dict[str, Any]:
    """Return the output's labels and uncertainty as dask arrays over its zarr arrays."""
    import dask.array as da

    arrays = {}
    for name in ("labels", "uncertainty"):
        path = Path(out) / name / "0"
        if path.exists():
            arrays[name] = da.from_zarr(str(path))
    return arrays

r"""A trained model and its file: a JSON header and a classifier payload, no pickle.

File layout::

    b"TILEDSEG-MODEL\n"          magic line
    8 bytes, big-endian          length of the header
    header                       UTF-8 JSON: bank, classes, channels, spacing, versions,
                                 training summary, payload size and SHA-256, header SHA-256
    payload                      XGBoost UBJSON, a forest's arrays (.npz, no pickle), or a
                                 skops archive for another scikit-learn estimator

Loading checks the magic (a pickle is recognised with pickletools, which executes
nothing), the sizes and both checksums before it parses the payload, and
loads a skops payload only if every type skops does not trust itself is on an
exact allowlist (see ``tiledseg.classifiers``). The checksums catch corruption;
they are not a signature.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiledseg._openmp import passive_waits
from tiledseg.classifiers import (
    Classifier,
    ForestClassifier,
    SklearnClassifier,
    XGBoostClassifier,
)
from tiledseg.errors import ModelFileError, OutputExistsError
from tiledseg.features.bank import FeatureBank
from tiledseg.volume import same_path

__all__ = ["MAGIC", "Model", "check_model_path", "load_model", "versions"]

MAGIC = b"TILEDSEG-MODEL\n"
#: Version 2 adds ``columns`` (a feature-selected model); version 3 bank options
#: (``in_2d``, ``extra_channels``) and plug-in families; version 4 XGBoost's
#: random-forest mode (the ``random-forest`` of ``--device cuda``); version 5 autocontext
#: stages (``--stages``, their payloads one after another); version 6 the packed random
#: forest (``tiledseg.forest``; older ones hold a skops payload); version 7 ``in_2d`` at
#: some of a family's scales only (ilastik's choice per scale). A model is written
#: with the lowest version that holds it, so older tiledseg reads what it can
#: understand and refuses the rest with "update tiledseg".
FORMAT_VERSION = 7
_READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7)
_LENGTH = struct.Struct(">Q")


def versions() -> dict[str, str]:
    """Versions of tiledseg and the libraries that shape its results."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in ("tiledseg", "numpy", "scipy", "xgboost", "scikit-learn", "dask", "zarr"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return out


def label_dtype(classes: np.ndarray) -> np.dtype:
    """Smallest unsigned integer type that holds every class value."""
    return np.min_scalar_type(int(np.max(classes)))


@dataclass
class Model:
    """A classifier with everything needed to reproduce its features.

    Attributes
    ----------
    classifier : Classifier
        Fitted on class indices ``0..k-1``.
    classes : ndarray
        The user's label value of each class index (e.g. ``[85, 170, 255]``).
    bank : FeatureBank
        Features the classifier was trained on.
    ndim, n_channels : int
        Spatial dimensionality and channel count of the training image.
    spacing : tuple of float
        Voxel spacing the features were computed with (used again to predict).
    channel_axis : int or None
        Channel axis of the training image, the default for prediction.
    summary : dict
        Training summary (voxels per class, rounds, held-out accuracy, ...).
    columns : tuple of int, optional
        The bank's features the classifier uses, by position (``--select-features``);
        ``None``: all of them.
    stages : tuple of Classifier
        Autocontext (:mod:`tiledseg.autocontext`): the earlier stages, in order; the
        ``classifier`` is the last stage and sees their probabilities' features.
        Empty for a plain model.
    """

    classifier: Classifier
    classes: np.ndarray
    bank: FeatureBank
    ndim: int
    n_channels: int
    spacing: tuple[float, ...]
    channel_axis: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=versions)
    checksum: str | None = None
    columns: tuple[int, ...] | None = None
    stages: tuple[Classifier, ...] = ()

    @property
    def n_stages(self) -> int:
        """Classifier stages: 1 for a plain model, more with autocontext."""
        return len(self.stages) + 1

    @property
    def spacings(self) -> list[tuple[float, ...]]:
        """The anisotropies (spacings relative to the finest axis) it was trained at.

        One for a model of one image, or of several images of one anisotropy; more when
        its training images differed, and then it predicts an image at the image's own.
        """
        from tiledseg.features.bank import relative_spacing

        found: list[tuple[float, ...]] = []
        # (the training images' own; a model of one image, or of several saved before they
        # were recorded, has only its spacing)
        given = [image.get("spacing") for image in self.summary.get("images", [])]
        for spacing in [g for g in given if g] or [self.spacing]:
            relative = tuple(float(r) for r in relative_spacing(spacing))
            if not any(np.allclose(relative, f, rtol=1e-3) for f in found):
                found.append(relative)
        return found

    @property
    def nan_fill(self) -> float | None:
        """The value NaN and infinite values were read as in training (``None``: refused)."""
        return self.summary.get("nan_fill")

    @property
    def intensity(self) -> dict[str, Any] | None:
        """The dtype and range of the values training read (``None``: an older model).

        ``{"dtype": ..., "low": ..., "high": ...}``: the 0.1 and 99.9 percentiles of the
        image's values in the boxes of scribbles. Prediction warns when an image's values
        are far from them (:func:`tiledseg.predict.intensity_warnings`).
        """
        return self.summary.get("intensity") or None

    @property
    def feature_names(self) -> list[str]:
        """Name of every feature the (last stage's) classifier uses, in stack order."""
        return self.stage_feature_names(self.n_stages)

    def stage_feature_names(self, stage: int) -> list[str]:
        """Names of the features stage ``stage`` (1, 2, ...) uses."""
        from tiledseg.autocontext import stage_feature_names

        names = stage_feature_names(
            self.bank,
            ndim=self.ndim,
            n_channels=self.n_channels,
            classes=[int(c) for c in self.classes],
            stage=stage,
        )
        return names if self.columns is None else [names[i] for i in self.columns]

    @property
    def n_block_features(self) -> int:
        """Feature arrays of a block's size a block holds at once, for sizing GPU blocks.

        A plain model: the bank's features. With autocontext (an estimate, not measured
        on a GPU): the bank's features on the block grown by the later stages' halos
        (counted ``n_stages`` times: up to 1.9x the block in 3D with two stages, and the
        image part of each stage's table), and each stage's context features twice (the
        maps' features and the concatenated table).
        """
        from tiledseg.autocontext import n_context_features

        n = self.bank.n_features(ndim=self.ndim, n_channels=self.n_channels)
        if self.stages:
            context = n_context_features(self.bank, ndim=self.ndim, n_classes=len(self.classes))
            n = n * (1 + self.n_stages) + 2 * context
        return n

    @property
    def halo(self) -> tuple[int, ...]:
        """Halo per axis the features need (one bank halo per stage)."""
        return tuple(self.n_stages * h for h in self.bank.halo(self.spacing))

    def block_probabilities(
        self, data: Any, *, inner: tuple[slice, ...], n_threads: int = 1, device: str = "cpu"
    ) -> Any:
        """Return class probabilities ``(n_voxels, k)`` of the block at ``inner`` of ``data``.

        The block is read with :attr:`halo`, and every stage is computed on it.
        """
        from tiledseg.autocontext import cascade_probabilities

        return cascade_probabilities(
            data,
            inner=inner,
            bank=self.bank,
            spacing=self.spacing,
            stages=[*self.stages, self],
            n_threads=n_threads,
            device=device,
        )

    @property
    def label_dtype(self) -> np.dtype:
        """The dtype of the label maps this model writes."""
        return label_dtype(self.classes)

    def predict_proba(self, features: Any, *, n_threads: int = 1, device: str = "cpu") -> Any:
        """Return class probabilities of a feature table ``(n, n_features)`` of the whole bank.

        The table is numpy, or cupy on ``device="cuda"``: see :meth:`Classifier.predict_proba`.
        """
        if self.columns is not None:
            features = features[:, list(self.columns)]
        return self.classifier.predict_proba(features, n_threads=n_threads, device=device)

    # -- file ------------------------------------------------------------------------
    @property
    def _format_version(self) -> int:
        """The lowest format version that holds this model (see :data:`FORMAT_VERSION`)."""
        bank = self.bank
        if any(scales != bank.families[f] for f, scales in bank.in_2d.items()):
            return 7
        if any(isinstance(c, ForestClassifier) for c in (*self.stages, self.classifier)):
            return 6
        if self.stages:
            return 5
        if getattr(self.classifier, "forest", False):
            return 4
        if bank.in_2d or bank.extra_channels or bank.plugins:
            return 3
        return 2 if self.columns is not None else 1

    def _header(self, payload: bytes, stage_bytes: list[int]) -> dict[str, Any]:
        stages = {}
        if self.stages:
            # the earlier stages' payloads come first in the payload, in order
            stages["stages"] = [
                {**_classifier_header(c), "payload_bytes": n}
                for c, n in zip(self.stages, stage_bytes, strict=True)
            ]
        return {
            "format": "tiledseg-model",
            "format_version": self._format_version,
            "classes": [int(c) for c in self.classes],
            "ndim": self.ndim,
            "n_channels": self.n_channels,
            "channel_axis": self.channel_axis,
            "spacing": list(self.spacing),
            "bank": self.bank.to_dict(),
            "feature_names": self.feature_names,
            "columns": None if self.columns is None else list(self.columns),
            "halo": list(self.halo),
            "classifier": _classifier_header(self.classifier),
            **stages,
            "summary": self.summary,
            "versions": self.versions,
            "payload_bytes": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
        }

    def to_bytes(self) -> bytes:
        """Return the model file's bytes."""
        parts = [c.to_bytes() for c in (*self.stages, self.classifier)]
        payload = b"".join(parts)
        # as JSON will give it back: integer keys (a summary's class values) become
        # strings, and the digest must be of what load_model reads
        header = json.loads(json.dumps(self._header(payload, [len(p) for p in parts[:-1]])))
        header["header_sha256"] = _header_digest(header)
        blob = json.dumps(header, sort_keys=True).encode()
        return MAGIC + _LENGTH.pack(len(blob)) + blob + payload

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the model file atomically; refuse to replace a file unless ``overwrite``."""
        path = check_model_path(path, overwrite=overwrite)
        data = self.to_bytes()
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self.checksum = hashlib.sha256(data).hexdigest()
        return path

    def describe(self) -> dict[str, Any]:
        """Return the model as plain data (for ``tiledseg info``)."""
        info = {
            "classes": [int(c) for c in self.classes],
            "classifier": self.classifier.name,
            "ndim": self.ndim,
            "channels": self.n_channels,
            "spacing": list(self.spacing),
            "halo": list(self.halo),
            "bank": self.bank.to_dict(),
            "features": self.feature_names,
            "stages": self.n_stages,
            "summary": self.summary,
            "versions": self.versions,
            "checksum": self.checksum,
        }
        importance = self.classifier.importances()
        if importance is not None and len(importance) == len(info["features"]):
            info["importance"] = [float(v) for v in importance]
        return info


def check_model_path(
    path: str | os.PathLike, *, overwrite: bool, inputs: Sequence[str | None] = ()
) -> Path:
    """Refuse a model path that is an input, a folder, an existing file, or unwritable.

    An existing file is refused only without ``overwrite``. Nothing is written; callers
    check before training.
    """
    text, path = str(path), Path(path)  # messages name the path as the user wrote it
    for source in inputs:
        if source is not None and same_path(source, path):
            raise OutputExistsError(
                f"model file {text!r} is one of the inputs; choose another path"
            )
    if path.is_dir():
        raise OutputExistsError(
            f"model path {text!r} is a directory; give a file name such as model.tseg"
        )
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"model file {text!r} exists; choose another path or pass --overwrite"
        )
    from tiledseg.formats import file_kind

    kind = file_kind(text) if path.is_file() else None
    if kind not in (None, "model"):
        raise OutputExistsError(
            f"{text!r} exists and is a {kind} data file, not a tiledseg model; tiledseg will "
            "not replace it, even with --overwrite: choose another path"
        )
    from tiledseg.runs import check_writable

    # (before training: a model that cannot be saved must not cost a fit)
    check_writable(text, what="model")
    return path


def _header_digest(header: dict[str, Any]) -> str:
    body = {k: v for k, v in header.items() if k != "header_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _is_pickle(path: Path) -> bool:
    """Whether a file parses as a pickle, read with pickletools (which executes nothing)."""
    import pickletools

    if path.stat().st_size > 256 * 2**20:
        return False
    try:
        for opcode, _, _ in pickletools.genops(path.read_bytes()):
            if opcode.name == "STOP":
                return True
    except Exception:  # any parse failure: not a pickle
        return False
    return False


def load_model(path: str | os.PathLike) -> Model:
    """Read and verify a model file.

    Parameters
    ----------
    path : path
        A model file written by :meth:`Model.save` (``tiledseg train``).

    Returns
    -------
    Model
        The model, its classifiers rebuilt from their payloads.

    Raises
    ------
    ModelFileError
        When the file is missing, is a pickle or another format, is truncated, or its
        header or payload does not match its checksums. Nothing is unpickled, ever.
    """
    passive_waits()
    path = Path(path)
    _check_model_file(path)
    name = str(path)
    data = path.read_bytes()
    header, payload = _read_header(data, name)
    _check_payload(header, payload, name)
    stages = []
    for info in header.get("stages", []):
        stages.append(_classifier_of(info, payload[: info["payload_bytes"]]))
        payload = payload[info["payload_bytes"] :]
    classifier = _classifier_of(header["classifier"], payload)
    return Model(
        classifier=classifier,
        classes=np.asarray(header["classes"]),
        bank=_bank_of(header["bank"]),
        ndim=int(header["ndim"]),
        n_channels=int(header["n_channels"]),
        spacing=tuple(header["spacing"]),
        channel_axis=header.get("channel_axis"),
        summary=header.get("summary", {}),
        versions=header.get("versions", {}),
        checksum=hashlib.sha256(data).hexdigest(),
        columns=None if header.get("columns") is None else tuple(header["columns"]),
        stages=tuple(stages),
    )


def _check_model_file(path: Path) -> None:
    """Refuse a path that is not a file starting with the model magic (a pickle by name)."""
    if path.is_dir():
        raise ModelFileError(
            f"model {str(path)!r} is a folder; give a model file written by 'tiledseg train'"
        )
    if not path.is_file():
        raise ModelFileError(f"model file {str(path)!r} does not exist")
    name = str(path)
    with path.open("rb") as f:
        head = f.read(len(MAGIC))
    if head != MAGIC and _is_pickle(path):
        raise ModelFileError(
            f"{name!r} is a Python pickle, not a tiledseg model; tiledseg never unpickles files. "
            "Retrain with 'tiledseg train' to get a model file"
        )
    if head != MAGIC:
        what = "a zip archive" if head[:2] == b"PK" else "not a tiledseg model file"
        raise ModelFileError(f"{name!r} is {what}; give a model written by 'tiledseg train'")


def _read_header(data: bytes, name: str) -> tuple[dict[str, Any], bytes]:
    """Read and verify the file's header; return it and the payload bytes after it."""
    start = len(MAGIC) + _LENGTH.size
    if len(data) < start:
        raise ModelFileError(f"model file {name!r} is truncated; retrain or copy it again")
    (length,) = _LENGTH.unpack(data[len(MAGIC) : start])
    if len(data) < start + length:
        raise ModelFileError(f"model file {name!r} is truncated; retrain or copy it again")
    try:
        header = json.loads(data[start : start + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(f"model file {name!r} has a damaged header; retrain it") from None
    if not isinstance(header, dict) or header.get("header_sha256") != _header_digest(header):
        raise ModelFileError(
            f"model file {name!r} has been modified (header checksum mismatch); retrain it"
        )
    return header, data[start + length :]


def _check_payload(header: dict[str, Any], payload: bytes, name: str) -> None:
    """Refuse a payload of the wrong size or checksum, or a format this version cannot read."""
    if len(payload) != header["payload_bytes"]:
        raise ModelFileError(
            f"model file {name!r} is truncated ({len(payload)} of {header['payload_bytes']} "
            "payload bytes); retrain or copy it again"
        )
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise ModelFileError(
            f"model file {name!r} has been modified (payload checksum mismatch); retrain it"
        )
    if header.get("format_version") not in _READABLE_VERSIONS:
        raise ModelFileError(
            f"model file {name!r} has format version {header.get('format_version')}; this "
            f"tiledseg reads versions {', '.join(map(str, _READABLE_VERSIONS))}: update "
            "tiledseg or retrain"
        )


def _classifier_header(classifier: Classifier) -> dict[str, Any]:
    """Return what the header says of one classifier.

    Its payload is XGBoost's, the forest's arrays or skops'.
    """
    if isinstance(classifier, XGBoostClassifier):
        return {"kind": "xgboost", "params": classifier.params, "n_classes": classifier.n_classes}
    if isinstance(classifier, ForestClassifier):
        return {
            "kind": "forest",
            "trees": classifier.trees,
            "depth": classifier.depth,
            "seed": classifier.seed,
        }
    return {"kind": "sklearn", "estimator": type(classifier.estimator).__name__}


def _classifier_of(info: dict[str, Any], payload: bytes) -> Classifier:
    """Return a classifier made from its header entry and its payload."""
    if info["kind"] == "xgboost":
        return XGBoostClassifier.from_bytes(
            payload, n_classes=info["n_classes"], params=info["params"]
        )
    if info["kind"] == "forest":
        return ForestClassifier.from_bytes(
            payload, seed=int(info.get("seed", 0)), depth=info.get("depth")
        )
    return SklearnClassifier.from_bytes(payload)


def _bank_of(data: dict[str, Any]) -> FeatureBank:
    """Return the model's bank; a plug-in's module is imported only if allowed.

    A model file may come from anywhere: :func:`tiledseg.features.plugins.untrusted_source`.
    """
    from tiledseg.features.plugins import untrusted_source

    with untrusted_source():
        return FeatureBank.from_dict(data)

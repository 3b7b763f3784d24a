"""Autocontext: classifier stages that see the previous stage's probabilities.

Stage 1 is the plain classifier on the image's features. Stage ``k > 1`` sees the
image's features and the bank applied to each of stage ``k-1``'s probability maps
(the *context features*), so it learns from the neighbourhood of a voxel's
classification as ilastik's autocontext does: speckle and confused regions are
visible to it.

Exact under tiling: stage ``k``'s context features of a block need stage ``k-1``'s
probabilities on the block grown by one bank halo, which need stage ``k-2``'s on
the block grown by two, and so on. A block of an ``N``-stage model is read with
``N`` halos (:func:`stage_halo`) and each stage is computed on the block grown by
the halos the later stages still need, clipped to the volume, so the filters'
own boundary mode applies at the volume's true edges only, as on the whole image.

Training (:mod:`tiledseg.training`) fits stage ``k`` on the same scribbles; the
stage ``k-1`` probabilities its table is built from are *out of fold*: the
scribbled voxels of each fold of strokes (:func:`tiledseg.strokes.stroke_folds`)
get probabilities from stage models that never saw those strokes, as a new image
would. :data:`CONTEXT` names the alternative (in-sample: the final stage models
for every voxel), kept to measure against.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tiledseg.arrays import to_device
from tiledseg.blocks import haloed, within
from tiledseg.errors import TiledsegError
from tiledseg.features.backend import get_backend
from tiledseg.features.bank import FeatureBank
from tiledseg.features.filters import block_features

__all__ = [
    "CONTEXT",
    "FOLDS",
    "MAX_STAGES",
    "cascade_features",
    "cascade_probabilities",
    "check_context",
    "check_stages",
    "context_bank",
    "image_features",
    "n_context_features",
    "stage_feature_names",
    "stage_halo",
]

#: Most stages a model may have (each adds a halo and a classifier to every block).
MAX_STAGES = 5
#: Folds of strokes for the out-of-fold probabilities of earlier stages.
FOLDS = 4
#: How an earlier stage's probabilities at the scribbles are made for the next stage's
#: table: ``out-of-fold`` (by strokes) or ``in-sample`` (the final earlier stages).
CONTEXT = ("out-of-fold", "in-sample")


def check_stages(stages: Any) -> int:
    """Return ``stages`` as an int from 1 to :data:`MAX_STAGES`, or one clear error."""
    text = str(stages).strip()
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or isinstance(stages, bool) or str(value) != text.lstrip("+"):
        raise TiledsegError(
            f"--stages must be a whole number of classifier stages (1 = no autocontext, "
            f"2 = one autocontext stage), got {stages!r}"
        )
    if not 1 <= value <= MAX_STAGES:
        raise TiledsegError(
            f"--stages must be from 1 to {MAX_STAGES} (1 = no autocontext, 2 = one "
            f"autocontext stage), got {value}"
        )
    return value


def context_bank(bank: FeatureBank) -> FeatureBank:
    """Return the bank applied to probability maps: the image bank's families, no extra channels."""
    return dataclasses.replace(bank, extra_channels=0, filter_extra=False)


def stage_halo(bank: FeatureBank, spacing: Sequence[float], n_stages: int) -> tuple[int, ...]:
    """Halo per axis of an ``n_stages`` model: one bank halo per stage."""
    return tuple(n_stages * h for h in bank.halo(spacing))


def stage_feature_names(
    bank: FeatureBank, *, ndim: int, n_channels: int, classes: Sequence[int], stage: int
) -> list[str]:
    """Names of stage ``stage``'s features: the image's, then the context features."""
    names = [str(n) for n in bank.feature_names(ndim=ndim, n_channels=n_channels)]
    if stage > 1:
        context = context_bank(bank).feature_names(ndim=ndim, n_channels=len(classes))
        names += [
            f"stage {stage - 1} P(class {classes[n.channel]}): "
            + str(dataclasses.replace(n, channel=0)).replace(", channel=0", "")
            for n in context
        ]
    return names


def _grown(inner: tuple[slice, ...], halo: Sequence[int], k: int, shape) -> tuple[slice, ...]:
    """``inner`` grown by ``k`` halos, clipped to the read region of ``shape``."""
    return haloed(inner, [k * h for h in halo], shape)


def image_features(
    data: Any, *, inner: tuple[slice, ...], bank: FeatureBank, spacing: Sequence[float], n: int
) -> Any:
    """Return the bank's features of ``data`` on the block ``inner`` grown by ``n`` halos.

    The ``n`` halos are those the later stages' context features need (the grown block is
    clipped). The features are stage 1's input, and every later stage's image part.
    """
    outer = _grown(inner, bank.halo(spacing), n, data.shape[1:])
    return block_features(data, bank=bank, inner=outer, spacing=spacing)


def cascade_features(
    data: Any,
    *,
    inner: tuple[slice, ...],
    bank: FeatureBank,
    spacing: Sequence[float],
    classifiers: Sequence[Any],
    n_threads: int = 1,
    device: str = "cpu",
    own: Any = None,
) -> Any:
    """Features of stage ``len(classifiers) + 1`` of the block at ``inner`` of ``data``.

    Parameters
    ----------
    data : array, shape (channels, *read_shape)
        The block read with ``len(classifiers) + 1`` bank halos (clipped at the volume's
        edges), numpy or cupy.
    inner : tuple of slice
        The block inside ``data``.
    bank : FeatureBank
        The image's bank; the context features are :func:`context_bank` of it.
    spacing : sequence of float
        Voxel spacing.
    classifiers : sequence
        The earlier stages, in order: objects with ``predict_proba(table, n_threads=,
        device=)`` returning ``(n, k)`` probabilities (a :class:`Classifier`, or a
        :class:`~tiledseg.model.Model`'s stage).
    n_threads : int
        Threads of each classifier's prediction.
    device : {"cpu", "cuda"}
        Where ``data`` is; probabilities are brought there.
    own : array, optional
        :func:`image_features` of ``data`` with ``n=len(classifiers)``, when already
        computed (training computes them once for several chains).

    Returns
    -------
    array, shape (n_features, *block_shape), float32
        Stage 1: the bank's features; stage ``k > 1``: the bank's, then the context
        features of stage ``k-1``'s probability maps.
    """
    shape = data.shape[1:]
    halo = bank.halo(spacing)
    n = len(classifiers)
    # stage 1 on the block grown by the halos of the n later stages' context features
    outer = _grown(inner, halo, n, shape)
    if own is None:
        own = image_features(data, inner=inner, bank=bank, spacing=spacing, n=n)
    if not classifiers:
        return own  # a plain model: nothing more per block
    features = own
    ctx = context_bank(bank)
    for k, classifier in enumerate(classifiers, start=1):
        region = _grown(inner, halo, n - k + 1, shape)  # where stage k has probabilities
        table = features.reshape(features.shape[0], -1).T
        proba = classifier.predict_proba(table, n_threads=n_threads, device=device)
        maps = to_device(proba, device).T.reshape((proba.shape[1], *features.shape[1:]))
        target = _grown(inner, halo, n - k, shape)  # where stage k+1 needs features
        context = block_features(maps, bank=ctx, inner=within(target, region), spacing=spacing)
        mine = own[(slice(None), *within(target, outer))]
        features = get_backend(context).xp.concatenate([mine, context], axis=0)
    return features


def cascade_probabilities(
    data: Any,
    *,
    inner: tuple[slice, ...],
    bank: FeatureBank,
    spacing: Sequence[float],
    stages: Sequence[Any],
    n_threads: int = 1,
    device: str = "cpu",
) -> Any:
    """Probabilities ``(n_voxels, k)`` of the last of ``stages`` at the block ``inner``."""
    features = cascade_features(
        data,
        inner=inner,
        bank=bank,
        spacing=spacing,
        classifiers=stages[:-1],
        n_threads=n_threads,
        device=device,
    )
    table = features.reshape(features.shape[0], -1).T
    return stages[-1].predict_proba(table, n_threads=n_threads, device=device)


def n_context_features(bank: FeatureBank, *, ndim: int, n_classes: int) -> int:
    """Context features per stage after the first."""
    return context_bank(bank).n_features(ndim=ndim, n_channels=n_classes)


def check_context(context: str) -> str:
    """Refuse an unknown :data:`CONTEXT` choice."""
    if context not in CONTEXT:
        raise TiledsegError(
            f"autocontext context {context!r} is unknown; use {' or '.join(CONTEXT)}"
        )
    return context

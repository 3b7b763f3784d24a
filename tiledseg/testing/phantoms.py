"""Synthetic images with exact ground truth and scribbles.

A phantom is a partition of space into blobby phases (the argmax of smoothed
random fields). Phases differ in mean intensity, and two of them share a mean
and differ only in texture, so intensity alone cannot separate every class and
the texture families of the bank matter. Gaussian noise is added on top, and
the image is stored as uint8 like most microscopy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

__all__ = ["Phantom", "make_phantom"]


@dataclass
class Phantom:
    """An image, its dense truth (1..k) and sparse scribbles (0 = unlabelled)."""

    image: np.ndarray
    truth: np.ndarray
    scribbles: np.ndarray


def make_phantom(
    shape: Sequence[int],
    *,
    n_classes: int = 4,
    feature_size: float = 10.0,
    noise: float = 0.5,
    scribble_fraction: float = 0.0015,
    scribbles: Literal["balls", "strokes"] = "balls",
    stroke_slices: int = 8,
    seed: int = 0,
) -> Phantom:
    """Make a 2D or 3D phantom.

    Parameters
    ----------
    shape : sequence of int
        Image shape (2 or 3 axes).
    n_classes : int
        Number of phases (2 to 6). With 4 or more, the last phase has the mean of
        the second and is told apart by texture only.
    feature_size : float
        Typical size of a phase region in voxels.
    noise : float
        Standard deviation of the added noise, in units of the step between phase means.
    scribble_fraction : float
        Fraction of voxels labelled, the same for every class, well inside its phase.
    scribbles : {"balls", "strokes"}
        ``"balls"``: small balls spread through the whole volume. ``"strokes"``:
        straight strokes along x on ``stroke_slices`` evenly spaced z-slices, as a
        user paints in a slice viewer (3D only; 2D images get strokes on the image).
    stroke_slices : int
        Number of z-slices holding strokes.
    seed : int
        Seed of every random draw.

    Returns
    -------
    Phantom
    """
    if not 2 <= n_classes <= 6:
        raise ValueError(f"n_classes must be 2..6, got {n_classes}")
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    fields = np.empty((n_classes, *shape), dtype=np.float32)
    for k in range(n_classes):
        ndi.gaussian_filter(
            rng.standard_normal(shape, dtype=np.float32), feature_size / 2.5, output=fields[k]
        )
    truth = (fields.argmax(axis=0) + 1).astype(np.uint8)
    del fields
    means = np.arange(n_classes, dtype=np.float32)
    if n_classes >= 4:
        means[-1] = means[1]
    value = means[truth - 1]
    if n_classes >= 4:
        texture = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.8)
        texture *= 1.2 / texture.std()
        value += np.where(truth == n_classes, texture, 0.0)
    value += rng.standard_normal(shape, dtype=np.float32) * noise
    image = np.clip(40.0 + 45.0 * value, 0, 255).astype(np.uint8)
    if scribbles == "balls":
        labels = _scribbles(truth, n_classes, scribble_fraction, rng)
    elif scribbles == "strokes":
        labels = _strokes(truth, n_classes, scribble_fraction, stroke_slices, rng)
    else:
        raise ValueError(f"scribbles must be 'balls' or 'strokes', got {scribbles!r}")
    return Phantom(image=image, truth=truth, scribbles=labels)


def _strokes(truth, n_classes, fraction, n_slices, rng, length: int = 24) -> np.ndarray:
    planes = truth[np.newaxis] if truth.ndim == 2 else truth
    if truth.ndim == 3:
        chosen = np.linspace(0, truth.shape[0] - 1, min(n_slices, truth.shape[0]) + 2)[1:-1]
        chosen = np.unique(chosen.round().astype(int))
    else:
        chosen = np.array([0])
    labels = np.zeros_like(planes)
    per_class = max(1, int(fraction * truth.size / n_classes))
    per_slice = max(1, per_class // len(chosen))
    cross = ndi.generate_binary_structure(2, 1)
    for z in chosen:
        for k in range(1, n_classes + 1):
            inside = ndi.binary_erosion(planes[z] == k, cross, iterations=2)
            ys, xs = np.nonzero(inside)
            painted = 0
            for i in rng.permutation(len(ys)):
                if painted >= per_slice:
                    break
                y, x = ys[i], xs[i]
                run = inside[y, x : x + length]
                stop = int(np.argmin(run)) if not run.all() else len(run)
                labels[z, y, x : x + stop] = k
                painted += stop
    return labels[0] if truth.ndim == 2 else labels


def _scribbles(truth: np.ndarray, n_classes: int, fraction: float, rng) -> np.ndarray:
    radius = 2
    ball = ndi.generate_binary_structure(truth.ndim, 1)
    ball = ndi.iterate_structure(ball, radius)
    per_ball = int(ball.sum())
    scribbles = np.zeros_like(truth)
    target = max(1, int(fraction * truth.size / n_classes))
    for k in range(1, n_classes + 1):
        inside = ndi.binary_erosion(truth == k, ball, iterations=1)
        candidates = np.flatnonzero(inside)
        if candidates.size == 0:
            candidates = np.flatnonzero(truth == k)
        n_seeds = max(1, min(candidates.size, target // per_ball))
        seeds = np.zeros(truth.size, dtype=bool)
        seeds[rng.choice(candidates, size=n_seeds, replace=False)] = True
        grown = ndi.binary_dilation(seeds.reshape(truth.shape), ball) & (truth == k)
        scribbles[grown] = k
    return scribbles

"""Feature banks: which filter families at which scales, their names and their halo.

A :class:`FeatureBank` is data (family -> scales). Everything that depends on it
(the number of features, their names, the halo a block needs) is derived here,
so the kernels in :mod:`tiledseg.features.filters` and the tiling code agree.

Scales are Gaussian standard deviations in voxels of the finest axis. With an
anisotropic ``spacing`` the standard deviation along axis ``a`` is
``sigma * min(spacing) / spacing[a]``, so a filter covers the same physical
distance along every axis.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tiledseg.errors import TiledsegError
from tiledseg.yamlfile import read_yaml

__all__ = [
    "DOG_RATIO",
    "FAMILIES",
    "NAMED_BANKS",
    "ST_OUTER_RATIO",
    "TRUNCATE",
    "FeatureBank",
    "kernel_radius",
    "relative_spacing",
    "resolve_bank",
]

#: Gaussian kernels are cut at this many standard deviations (the 3.5 sigma ilastik
#: uses for its halos; see docs/features.md for how its filters differ).
TRUNCATE = 3.5
#: Difference of Gaussians: G(sigma) - G(DOG_RATIO * sigma), as ilastik.
DOG_RATIO = 0.66
#: Structure tensor: gradient at sigma, products smoothed at ST_OUTER_RATIO * sigma, as ilastik.
ST_OUTER_RATIO = 0.5

#: The families, in the order their features appear in a stack.
FAMILIES: tuple[str, ...] = (
    "gaussian_smoothing",
    "laplacian_of_gaussian",
    "gaussian_gradient_magnitude",
    "difference_of_gaussians",
    "structure_tensor_eigenvalues",
    "hessian_of_gaussian_eigenvalues",
)

# ilastik's own names, accepted in bank files so that an ilastik feature table can be pasted.
_ILASTIK_ALIASES = {
    "GaussianSmoothing": "gaussian_smoothing",
    "LaplacianOfGaussian": "laplacian_of_gaussian",
    "GaussianGradientMagnitude": "gaussian_gradient_magnitude",
    "DifferenceOfGaussians": "difference_of_gaussians",
    "StructureTensorEigenvalues": "structure_tensor_eigenvalues",
    "HessianOfGaussianEigenvalues": "hessian_of_gaussian_eigenvalues",
}

_EIGEN_FAMILIES = ("structure_tensor_eigenvalues", "hessian_of_gaussian_eigenvalues")


def kernel_radius(sigma: float) -> int:
    """Return the radius in voxels of a Gaussian kernel cut at :data:`TRUNCATE` sigma.

    It is the radius scipy.ndimage uses for ``truncate=TRUNCATE``, so a halo of this
    size makes a tiled filter see every voxel the untiled one sees.
    """
    return int(TRUNCATE * float(sigma) + 0.5)


def relative_spacing(spacing: Sequence[float]) -> tuple[float, ...]:
    """Return ``spacing / min(spacing)``: 1 along the finest axis, larger along coarser ones."""
    finest = min(spacing)
    return tuple(float(s) / finest for s in spacing)


@dataclass(frozen=True)
class FeatureName:
    """The name of one feature: family, scale, channel and component."""

    family: str
    sigma: float
    channel: int
    component: int | None = None

    def __str__(self) -> str:
        text = f"{self.family}(sigma={self.sigma:g}, channel={self.channel}"
        if self.component is not None:
            text += f", eigenvalue={self.component}"
        return text + ")"


@dataclass(frozen=True)
class FeatureBank:
    """Filter families at chosen scales.

    Parameters
    ----------
    families : mapping of str to sequence of float
        Family name (one of :data:`FAMILIES`, or its ilastik name) to the scales at
        which it is computed. Families with no scales are dropped.
    """

    families: Mapping[str, tuple[float, ...]]

    def __post_init__(self) -> None:
        clean: dict[str, tuple[float, ...]] = {}
        for raw_name, raw_scales in dict(self.families).items():
            name = _ILASTIK_ALIASES.get(raw_name, raw_name)
            if name not in FAMILIES:
                raise TiledsegError(
                    f"unknown feature family {raw_name!r}; choose from {', '.join(FAMILIES)}"
                )
            scales = _check_scales(name, raw_scales)
            if scales:
                clean[name] = tuple(sorted(set(clean.get(name, ()) + scales)))
        if not clean:
            raise TiledsegError(
                "the feature bank is empty; give at least one family with one scale, "
                "e.g. {'gaussian_smoothing': [1.0]}"
            )
        ordered = {name: clean[name] for name in FAMILIES if name in clean}
        object.__setattr__(self, "families", ordered)

    # -- derived layout ---------------------------------------------------------------
    def components(self, family: str, ndim: int) -> int:
        """Return how many values ``family`` gives per voxel in ``ndim`` dimensions."""
        return ndim if family in _EIGEN_FAMILIES else 1

    def feature_names(self, *, ndim: int, n_channels: int) -> list[FeatureName]:
        """Return the name of every feature, in stack order (channel, family, scale, component)."""
        names = []
        for channel in range(n_channels):
            for family, scales in self.families.items():
                for sigma in scales:
                    n = self.components(family, ndim)
                    for k in range(n):
                        names.append(FeatureName(family, sigma, channel, k if n > 1 else None))
        return names

    def n_features(self, *, ndim: int, n_channels: int) -> int:
        """Return the number of features per voxel."""
        per_channel = sum(
            len(scales) * self.components(family, ndim) for family, scales in self.families.items()
        )
        return per_channel * n_channels

    def halo(self, spacing: Sequence[float]) -> tuple[int, ...]:
        """Return the halo per axis that makes tiled features equal untiled ones.

        It is the largest support of the whole filter chain of any feature: one
        Gaussian radius for the plain and derivative filters, and inner + outer
        radius for the structure tensor, whose smoothed products need gradients
        that far beyond the block.
        """
        rel = relative_spacing(spacing)
        halo = [0] * len(rel)
        for family, scales in self.families.items():
            for sigma in scales:
                for axis, step in enumerate(rel):
                    need = kernel_radius(sigma / step)
                    if family == "structure_tensor_eigenvalues":
                        need += kernel_radius(ST_OUTER_RATIO * sigma / step)
                    halo[axis] = max(halo[axis], need)
        return tuple(halo)

    # -- (de)serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, list[float]]:
        """Return the bank as plain data (family -> scales)."""
        return {name: list(scales) for name, scales in self.families.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Iterable[float]]) -> FeatureBank:
        """Build a bank from ``family -> scales`` data."""
        if not isinstance(data, Mapping):
            raise TiledsegError(
                f"a feature bank is a mapping 'family: [scales]', got {type(data).__name__}"
            )
        return cls({str(k): _as_tuple(k, v) for k, v in data.items()})

    @classmethod
    def from_yaml(cls, path: str | Path) -> FeatureBank:
        """Read a bank from a YAML file holding ``family: [scales]`` lines."""
        data = read_yaml(path, what="feature bank file")
        return cls.from_dict(data or {})

    def describe(self) -> str:
        """Return one line per family: ``family: scales``."""
        return "\n".join(
            f"{name}: {', '.join(f'{s:g}' for s in scales)}"
            for name, scales in self.families.items()
        )


def _as_tuple(family: Any, scales: Any) -> tuple[float, ...]:
    if isinstance(scales, int | float):
        scales = [scales]
    if not isinstance(scales, Iterable) or isinstance(scales, str | bytes):
        raise TiledsegError(
            f"scales of feature family {family!r} must be a list of numbers, got {scales!r}"
        )
    return tuple(scales)


def _check_scales(family: str, scales: Iterable[Any]) -> tuple[float, ...]:
    out = []
    for s in scales:
        try:
            value = float(s)
        except (TypeError, ValueError):
            raise TiledsegError(
                f"scale {s!r} of feature family {family!r} is not a number"
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise TiledsegError(
                f"scale {s!r} of feature family {family!r} must be a positive number of voxels"
            )
        out.append(value)
    return tuple(out)


def _load_named() -> dict[str, FeatureBank]:
    banks = {}
    folder = resources.files("tiledseg.features") / "banks"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            banks[entry.name[: -len(".yaml")]] = FeatureBank.from_dict(
                yaml.safe_load(entry.read_text()) or {}
            )
    return banks


#: Banks shipped with tiledseg, by name (files in ``tiledseg/features/banks/``).
NAMED_BANKS: dict[str, FeatureBank] = _load_named()


def resolve_bank(
    spec: str | Path | Mapping[str, Iterable[float]] | FeatureBank | None,
) -> FeatureBank:
    """Return a bank from a name, a YAML file, a mapping or a bank (``None``: ``"default"``)."""
    if spec is None:
        return NAMED_BANKS["default"]
    if isinstance(spec, FeatureBank):
        return spec
    if isinstance(spec, Mapping):
        return FeatureBank.from_dict(spec)
    text = str(spec)
    if text in NAMED_BANKS:
        return NAMED_BANKS[text]
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return FeatureBank.from_yaml(text)
    import difflib

    close = difflib.get_close_matches(text, NAMED_BANKS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise TiledsegError(
        f"features {text!r} is neither a bank name ({', '.join(sorted(NAMED_BANKS))}) "
        f"nor a YAML file of 'family: [scales]'{hint}"
    )

"""Feature banks: which filter families at which scales, their names and their halo.

A :class:`FeatureBank` is data (family -> scales). Everything that depends on it
(the number of features, their names, the halo a block needs) is derived here,
so the kernels in :mod:`tiledseg.features.filters` and the tiling code agree.

Scales are lengths in voxels of the finest axis: a Gaussian standard deviation
for the Gaussian families and ``sobel``, a window radius for the local-statistics
and rank families, a wavelength for ``gabor`` (:data:`SCALE_MEANING`). With an
anisotropic ``spacing`` the length along axis ``a`` is
``scale * min(spacing) / spacing[a]`` voxels of that axis, so a filter covers the
same physical distance along every axis.
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
    "GABOR_BANDWIDTH",
    "GABOR_N_STDS",
    "GABOR_ORIENTATIONS",
    "EXTRA_FAMILIES",
    "ILASTIK_FAMILIES",
    "NAMED_BANKS",
    "SCALE_MEANING",
    "ST_OUTER_RATIO",
    "TRUNCATE",
    "FeatureBank",
    "ball_extent",
    "box_radius",
    "gabor_half_sizes",
    "gabor_sigma",
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

#: Gabor: orientations ``k * 180 / GABOR_ORIENTATIONS`` degrees, k = 0, 1, ...
GABOR_ORIENTATIONS = 4
#: Gabor: bandwidth in octaves (scikit-image's default); sigma = 0.56 wavelength.
GABOR_BANDWIDTH = 1.0
#: Gabor: the envelope is cut at this many standard deviations (scikit-image's default).
GABOR_N_STDS = 3.0

#: The six ilastik families (the first six of :data:`FAMILIES`).
ILASTIK_FAMILIES: tuple[str, ...] = (
    "gaussian_smoothing",
    "laplacian_of_gaussian",
    "gaussian_gradient_magnitude",
    "difference_of_gaussians",
    "structure_tensor_eigenvalues",
    "hessian_of_gaussian_eigenvalues",
)

#: The families, in the order their features appear in a stack. New families are
#: appended, so that the feature order of older models never changes.
#: The families after ilastik's (computed in :mod:`tiledseg.features.extra`).
EXTRA_FAMILIES: tuple[str, ...] = (
    "sobel",
    "local_mean",
    "local_variance",
    "local_std",
    "median",
    "minimum",
    "maximum",
    "gabor",
)
FAMILIES: tuple[str, ...] = (*ILASTIK_FAMILIES, *EXTRA_FAMILIES)

#: What a scale of each family is (all in voxels of the finest axis).
SCALE_MEANING: dict[str, str] = {
    **dict.fromkeys(ILASTIK_FAMILIES, "sigma"),
    "sobel": "sigma",
    **dict.fromkeys(("local_mean", "local_variance", "local_std"), "radius"),
    **dict.fromkeys(("median", "minimum", "maximum"), "radius"),
    "gabor": "wavelength",
}

# ilastik's own names, accepted in bank files so that an ilastik feature table can be pasted,
# and other accepted aliases.
_ALIASES = {
    "multiscale_gaussian": "gaussian_smoothing",
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


def box_radius(radius: float) -> int:
    """Return the half-width in voxels of a box window of ``radius`` (rounded half up)."""
    return int(float(radius) + 0.5)


def ball_extent(radius: float, step: float) -> int:
    """Return the largest ``d >= 0`` with ``(d * step)**2 <= radius**2``.

    It is how far a ball of ``radius`` (in voxels of the finest axis) reaches along an
    axis whose voxels are ``step`` finest voxels long; the rank filters' footprint is
    built with the same inequality, so this is their exact halo.
    """
    r2 = float(radius) ** 2
    d = int(math.floor(float(radius) / step))
    while ((d + 1) * step) ** 2 <= r2:
        d += 1
    while d > 0 and (d * step) ** 2 > r2:
        d -= 1
    return d


def gabor_sigma(wavelength: float) -> float:
    """Return the Gaussian envelope's standard deviation of a Gabor filter of ``wavelength``.

    As ``skimage.filters.gabor_kernel`` with ``frequency = 1 / wavelength`` and
    ``bandwidth = GABOR_BANDWIDTH`` (about 0.56 wavelength for one octave).
    """
    b = GABOR_BANDWIDTH
    prefactor = 1.0 / math.pi * math.sqrt(math.log(2) / 2.0) * (2.0**b + 1) / (2.0**b - 1)
    return prefactor / (1.0 / float(wavelength))


def gabor_orientations() -> tuple[float, ...]:
    """Return the Gabor orientations in radians: ``k * pi / GABOR_ORIENTATIONS``."""
    return tuple(k * math.pi / GABOR_ORIENTATIONS for k in range(GABOR_ORIENTATIONS))


def gabor_half_sizes(wavelength: float, theta: float, rel_yx: Sequence[float]) -> tuple[int, int]:
    """Return the (y, x) half-sizes in voxels of the Gabor kernel at one orientation.

    scikit-image's box, ``ceil(max(|n s cos t|, |n s sin t|, 1))``, measured in
    finest-axis voxels and divided by the relative spacing of the y and x axes.
    """
    reach = GABOR_N_STDS * gabor_sigma(wavelength)
    extent = max(abs(reach * math.cos(theta)), abs(reach * math.sin(theta)), 1.0)
    return (math.ceil(extent / rel_yx[0]), math.ceil(extent / rel_yx[1]))


def relative_spacing(spacing: Sequence[float]) -> tuple[float, ...]:
    """Return ``spacing / min(spacing)``: 1 along the finest axis, larger along coarser ones."""
    finest = min(spacing)
    return tuple(float(s) / finest for s in spacing)


@dataclass(frozen=True)
class FeatureName:
    """The name of one feature: family, scale, channel and component.

    ``sigma`` holds the family's scale, whatever it means (:data:`SCALE_MEANING`);
    the printed name uses that meaning (``radius=``, ``wavelength=``). ``component``
    is the eigenvalue (largest first), the Sobel axis (``-1``: the magnitude), or the
    Gabor orientation index; ``None`` for single-valued families.
    """

    family: str
    sigma: float
    channel: int
    component: int | None = None

    def __str__(self) -> str:
        label = SCALE_MEANING.get(self.family, "sigma")
        text = f"{self.family}({label}={self.sigma:g}, channel={self.channel}"
        if self.component is None:
            pass
        elif self.family == "sobel":
            # components 0..ndim-1 are the axes; the last one is the magnitude
            text += f", axis={self.component}" if self.component >= 0 else ", magnitude"
        elif self.family == "gabor":
            degrees = self.component * 180 / GABOR_ORIENTATIONS
            text += f", theta={degrees:g}"
        else:
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
            name = _ALIASES.get(raw_name, raw_name)
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
        if family in _EIGEN_FAMILIES:
            return ndim
        if family == "sobel":
            return ndim + 1  # one derivative per axis, then the magnitude
        if family == "gabor":
            return GABOR_ORIENTATIONS
        return 1

    def feature_names(self, *, ndim: int, n_channels: int) -> list[FeatureName]:
        """Return the name of every feature, in stack order (channel, family, scale, component)."""
        names = []
        for channel in range(n_channels):
            for family, scales in self.families.items():
                for sigma in scales:
                    n = self.components(family, ndim)
                    for k in range(n):
                        component = k if n > 1 else None
                        if family == "sobel" and k == ndim:
                            component = -1  # the magnitude
                        names.append(FeatureName(family, sigma, channel, component))
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
                    elif family == "sobel":
                        need += 1  # the 3-tap Sobel kernel on the smoothed image
                    elif family in ("local_mean", "local_variance", "local_std"):
                        need = box_radius(sigma / step)
                    elif family in ("median", "minimum", "maximum"):
                        need = ball_extent(sigma, step)
                    elif family == "gabor":
                        need = 0  # along a plane's axes below; nothing across planes
                    halo[axis] = max(halo[axis], need)
                if family == "gabor":
                    yx = len(rel) - 2
                    for theta in gabor_orientations():
                        sizes = gabor_half_sizes(sigma, theta, rel[yx:])
                        for axis, size in zip((yx, yx + 1), sizes, strict=True):
                            halo[axis] = max(halo[axis], size)
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

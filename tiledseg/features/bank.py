"""Feature banks: which filter families at which scales, their names and their halo.

A :class:`FeatureBank` is data (family -> scales). Everything that depends on it
(the number of features, their names, the halo a block needs) is derived here from
its families' objects (:mod:`tiledseg.features.families` for the built-ins,
:mod:`tiledseg.features.plugins` for plug-ins), so the kernels in
:mod:`tiledseg.features.filters` and the tiling code agree.

Scales are lengths in voxels of the finest axis: a Gaussian standard deviation
for the Gaussian families and ``sobel``, a window radius for the local-statistics
and rank families, a wavelength for ``gabor`` (:data:`SCALE_MEANING`). With an
anisotropic ``spacing`` the length along axis ``a`` is
``scale * min(spacing) / spacing[a]`` voxels of that axis, so a filter covers the
same physical distance along every axis.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tiledseg.errors import TiledsegError
from tiledseg.features.families import ALIASES, BUILTINS, BY_NAME
from tiledseg.features.families.difference_of_gaussians import DOG_RATIO
from tiledseg.features.families.gabor import (
    GABOR_BANDWIDTH,
    GABOR_N_STDS,
    GABOR_ORIENTATIONS,
    gabor_half_sizes,
    gabor_orientations,
    gabor_sigma,
)
from tiledseg.features.families.local_statistics import box_radius
from tiledseg.features.families.rank import ball_extent
from tiledseg.features.families.structure_tensor import ST_OUTER_RATIO
from tiledseg.features.family import TRUNCATE, Family, FamilyDefaults, kernel_radius
from tiledseg.yamlfile import read_yaml

__all__ = [
    "DOG_RATIO",
    "FAMILIES",
    "GABOR_BANDWIDTH",
    "GABOR_N_STDS",
    "GABOR_ORIENTATIONS",
    "EXTRA_FAMILIES",
    "RAW",
    "ILASTIK_FAMILIES",
    "NAMED_BANKS",
    "SCALE_MEANING",
    "ST_OUTER_RATIO",
    "TRUNCATE",
    "FeatureBank",
    "ball_extent",
    "box_radius",
    "gabor_half_sizes",
    "gabor_orientations",
    "gabor_sigma",
    "is_builtin",
    "kernel_radius",
    "relative_spacing",
    "resolve_bank",
]

#: The built-in families, in the order their features appear in a stack (the order of
#: :data:`tiledseg.features.families.BUILTINS`). New families are appended, so that the
#: feature order of older models never changes.
FAMILIES: tuple[str, ...] = tuple(family.name for family in BUILTINS)
#: The six ilastik families (the first six of :data:`FAMILIES`).
ILASTIK_FAMILIES: tuple[str, ...] = tuple(f.name for f in BUILTINS if f.ilastik)
#: The families after ilastik's.
EXTRA_FAMILIES: tuple[str, ...] = tuple(f.name for f in BUILTINS if not f.ilastik)

#: What a scale of each family is (all in voxels of the finest axis).
SCALE_MEANING: dict[str, str] = {family.name: family.scale for family in BUILTINS}

#: Keys of a bank file that are options, not families.
IN_2D_KEY = "in_2d"
EXTRA_KEY = "extra_channels"


def is_builtin(name: str) -> bool:
    """Return whether ``name`` is a built-in family or one of its accepted aliases."""
    return name in BY_NAME or name in ALIASES


def relative_spacing(spacing: Sequence[float]) -> tuple[float, ...]:
    """Return ``spacing / min(spacing)``: 1 along the finest axis, larger along coarser ones."""
    finest = min(spacing)
    return tuple(float(s) / finest for s in spacing)


@dataclass(frozen=True)
class FeatureName:
    """The name of one feature: family, scale, channel and component.

    ``sigma`` holds the family's scale, whatever it means (:data:`SCALE_MEANING`);
    the printed name uses that meaning (``radius=``, ``wavelength=``). ``component``
    is the eigenvalue (largest first), the Sobel axis (``-1``: the magnitude), the
    Gabor orientation index or a plug-in's output; ``None`` for single-valued
    families. ``planar`` marks a family computed in 2D on each plane of a volume;
    the family ``raw`` is an extra channel's own values.
    """

    family: str
    sigma: float
    channel: int
    component: int | None = None
    planar: bool = False
    meaning: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        """Return the name as printed, e.g. ``sobel(sigma=1, channel=0, magnitude)``."""
        if self.family == RAW:
            return f"raw(channel={self.channel})"
        label = self.meaning or SCALE_MEANING.get(self.family, "sigma")
        text = f"{self.family}({label}={self.sigma:g}, channel={self.channel}"
        if self.component is not None:
            family = BY_NAME.get(self.family, _PLUGIN_NAMING)
            text += f", {family.describe_component(self.component)}"
        if self.planar:
            text += ", in 2D"
        return text + ")"


#: How a plug-in's components are named (a name holds no plug-in object, only its name):
#: the defaults every plug-in inherits.
_PLUGIN_NAMING = FamilyDefaults()


#: The family name of an extra channel's raw values in feature names.
RAW = "raw"


@dataclass(frozen=True)
class FeatureBank:
    """Filter families at chosen scales, and how each channel is used.

    Parameters
    ----------
    families : mapping of str to sequence of float
        Family name (one of :data:`FAMILIES`, its ilastik name, or a plug-in's name,
        see :mod:`tiledseg.features.plugins`) to the scales at which it is
        computed. Families with no scales are dropped.
    in_2d : collection of str, or mapping of str to sequence of float
        Families computed in 2D on each yx plane of a volume (ilastik's "compute in
        2D"), for stacks whose planes are far apart: no filtering across planes,
        and no halo along z for them. No effect on 2D images. A family named alone is
        in 2D at all its scales; ``{family: [scales]}`` (as a mapping, or as an item of
        the list) at those scales only, as ilastik chooses per scale. Normalised to
        ``family -> scales in 2D``.
    extra_channels : int
        The last ``extra_channels`` channels are co-registered extra inputs
        (``--extra-channels``): each contributes its raw value as a feature.
    filter_extra : bool
        Whether the extra channels also get every family of the bank, as the
        image's own channels do.
    """

    families: Mapping[str, tuple[float, ...]]
    in_2d: Collection[str] | Mapping[str, Sequence[float]] = ()
    extra_channels: int = 0
    filter_extra: bool = False
    plugins: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Resolve aliases and plug-ins, merge and sort the scales, check the options."""
        from tiledseg.features.plugins import find_plugin

        clean: dict[str, tuple[float, ...]] = {}
        plugins = dict(self.plugins)
        for raw_name, raw_scales in dict(self.families).items():
            name = ALIASES.get(raw_name, raw_name)
            if name not in BY_NAME and name not in plugins:
                plugin = find_plugin(name)
                if plugin is None:
                    raise TiledsegError(
                        f"unknown feature family {raw_name!r}; choose from {', '.join(FAMILIES)}, "
                        "or name a plug-in feature as 'package.module:function' (a plug-in's "
                        "short name must be registered with tiledseg.register_feature first)"
                    )
                plugins[name] = plugin
            scales = _check_scales(name, raw_scales)
            if scales:
                clean[name] = tuple(sorted(set(clean.get(name, ()) + scales)))
        extra = self.extra_channels
        if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
            raise TiledsegError(f"extra_channels must be a count >= 0, got {extra!r}")
        if not clean and not extra:
            raise TiledsegError(
                "the feature bank is empty; give at least one family with one scale, "
                "e.g. {'gaussian_smoothing': [1.0]}"
            )
        planar = _planar_scales(self.in_2d, clean)
        ordered = {name: clean[name] for name in FAMILIES if name in clean}
        ordered.update((name, clean[name]) for name in sorted(clean) if name not in FAMILIES)
        object.__setattr__(self, "families", ordered)
        object.__setattr__(self, "in_2d", {n: planar[n] for n in ordered if n in planar})
        object.__setattr__(self, "filter_extra", bool(self.filter_extra) and extra > 0)
        object.__setattr__(self, "plugins", {n: plugins[n] for n in ordered if n in plugins})

    # -- derived layout ---------------------------------------------------------------
    def planar(self, family: str, sigma: float) -> bool:
        """Return whether ``family`` at scale ``sigma`` is computed in 2D (``in_2d``)."""
        return sigma in self.in_2d.get(family, ())

    def family_ndim(self, family: str, ndim: int, sigma: float) -> int:
        """Return the dimensionality ``family`` at ``sigma`` is computed in (2 if in 2D)."""
        return 2 if self.planar(family, sigma) else ndim

    def family(self, name: str) -> Family:
        """Return the family object of ``name``, one of this bank's families."""
        return self.plugins.get(name) or BY_NAME[name]

    def components(self, family: str, ndim: int, sigma: float) -> int:
        """Return how many values ``family`` at ``sigma`` gives per voxel in ``ndim`` dims."""
        return self.family(family).n_outputs(self.family_ndim(family, ndim, sigma))

    def filtered(self, channel: int, n_channels: int) -> bool:
        """Return whether ``channel`` (of ``n_channels``, extras last) gets the bank's families."""
        return self.filter_extra or channel < n_channels - self.extra_channels

    def feature_names(self, *, ndim: int, n_channels: int) -> list[FeatureName]:
        """Return the name of every feature, in stack order.

        Per channel: an extra channel's raw value first, then (for filtered channels)
        family, scale, component.
        """
        self.check_channels(n_channels)
        names = []
        for channel in range(n_channels):
            if channel >= n_channels - self.extra_channels:
                names.append(FeatureName(RAW, 0.0, channel))
            if not self.filtered(channel, n_channels):
                continue
            for family, scales in self.families.items():
                plugin = self.plugins.get(family)
                meaning = plugin.scale if plugin is not None else None
                for sigma in scales:
                    planar = self.planar(family, sigma) and ndim == 3
                    n = self.components(family, ndim, sigma)
                    names.extend(
                        FeatureName(family, sigma, channel, component, planar, meaning)
                        for component in (self.family(family).component(k, n) for k in range(n))
                    )
        return names

    def n_features(self, *, ndim: int, n_channels: int) -> int:
        """Return the number of features per voxel."""
        self.check_channels(n_channels)
        per_channel = sum(
            self.components(family, ndim, sigma)
            for family, scales in self.families.items()
            for sigma in scales
        )
        filtered = sum(self.filtered(c, n_channels) for c in range(n_channels))
        return per_channel * filtered + self.extra_channels

    def check_channels(self, n_channels: int) -> None:
        """Refuse a channel count that leaves no image channel besides the extra ones."""
        if n_channels <= self.extra_channels:
            raise TiledsegError(
                f"the bank expects {self.extra_channels} extra channel(s) after the image's "
                f"own, but the input has {n_channels} channel(s) in all"
            )

    def halo(self, spacing: Sequence[float]) -> tuple[int, ...]:
        """Return the halo per axis that makes tiled features equal untiled ones.

        It is the largest support of the whole filter chain of any feature (each
        family's :meth:`~tiledseg.features.family.Family.margin`): e.g. one Gaussian
        radius for the plain and derivative filters, and inner + outer radius for
        the structure tensor, whose smoothed products need gradients that far beyond
        the block. ``in_2d`` families need none along z.
        """
        rel = relative_spacing(spacing)
        halo = [0] * len(rel)
        for name, scales in self.families.items():
            family = self.family(name)
            for scale in scales:
                first = 1 if self.planar(name, scale) and len(rel) == 3 else 0
                for axis, need in enumerate(family.margin(scale, rel[first:]), start=first):
                    halo[axis] = max(halo[axis], need)
        return tuple(halo)

    def fingerprints(self) -> dict[str, str]:
        """Return the plug-ins' code digests by name (empty without plug-ins).

        They go into cache keys and run identities: a bank's name alone does not say
        what a plug-in computes.
        """
        return {name: plugin.fingerprint() for name, plugin in self.plugins.items()}

    def restricted(self, families: Mapping[str, Iterable[float]]) -> FeatureBank:
        """Return a bank with only ``families`` (a subset), keeping the channel options."""
        return dataclasses.replace(
            self,
            families={f: tuple(s) for f, s in families.items()},
            in_2d={
                f: kept
                for f in self.in_2d
                if f in families and (kept := [s for s in self.in_2d[f] if s in tuple(families[f])])
            },
        )

    # -- (de)serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the bank as plain data: family -> scales, and the options if set."""
        data: dict[str, Any] = {name: list(scales) for name, scales in self.families.items()}
        if self.in_2d:
            # a family in 2D at all its scales by name, as banks were written before
            data[IN_2D_KEY] = [
                f if scales == self.families[f] else {f: list(scales)}
                for f, scales in self.in_2d.items()
            ]
        if self.extra_channels:
            data[EXTRA_KEY] = {"count": self.extra_channels, "filtered": self.filter_extra}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureBank:
        """Build a bank from ``family -> scales`` data, with the optional ``in_2d`` list."""
        if not isinstance(data, Mapping):
            raise TiledsegError(
                f"a feature bank is a mapping 'family: [scales]', got {type(data).__name__}"
            )
        data = dict(data)
        in_2d = data.pop(IN_2D_KEY, None) or ()
        if isinstance(in_2d, str) or not isinstance(in_2d, Iterable):
            raise TiledsegError(
                f"{IN_2D_KEY} must be a list of families (or of {{family: [scales]}}), got "
                f"{in_2d!r}"
            )
        if not isinstance(in_2d, Mapping):
            in_2d = [f if isinstance(f, Mapping) else str(f) for f in in_2d]
        extra = data.pop(EXTRA_KEY, None) or {}
        if not isinstance(extra, Mapping) or set(extra) - {"count", "filtered"}:
            raise TiledsegError(
                f"{EXTRA_KEY} must be a mapping with 'count' and 'filtered', got {extra!r}"
            )
        return cls(
            {str(k): _as_tuple(k, v) for k, v in data.items()},
            in_2d=in_2d,
            extra_channels=extra.get("count", 0),
            filter_extra=bool(extra.get("filtered", False)),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> FeatureBank:
        """Read a bank from a YAML file holding ``family: [scales]`` lines."""
        data = read_yaml(path, what="feature bank file")
        return cls.from_dict(data or {})

    def with_extra_channels(self, count: int, *, filtered: bool) -> FeatureBank:
        """Return this bank for an input with ``count`` extra channels after the image's."""
        return dataclasses.replace(self, extra_channels=count, filter_extra=filtered)

    def describe(self) -> str:
        """Return one line per family: ``family: scales``, and the options."""
        lines = [
            f"{name}: {', '.join(f'{s:g}' + _in_2d_mark(self, name, s) for s in scales)}"
            for name, scales in self.families.items()
        ]
        if self.extra_channels:
            how = "raw and filtered" if self.filter_extra else "raw"
            lines.append(f"extra channels: {self.extra_channels} ({how})")
        return "\n".join(lines)


def _in_2d_mark(bank: FeatureBank, family: str, sigma: float) -> str:
    return " (in 2D)" if bank.planar(family, sigma) else ""


def _planar_scales(
    in_2d: Any, families: Mapping[str, tuple[float, ...]]
) -> dict[str, tuple[float, ...]]:
    """Return ``in_2d`` as ``family -> scales in 2D``; refuse what the bank lacks (one line)."""
    if isinstance(in_2d, str):
        raise TiledsegError(
            f"in_2d is a list of families (or of {{family: [scales]}}), e.g. [{in_2d}], got "
            f"{in_2d!r}"
        )
    items: list[tuple[Any, Any]] = []
    for entry in in_2d.items() if isinstance(in_2d, Mapping) else in_2d:
        if isinstance(entry, Mapping):
            items.extend(entry.items())
        elif isinstance(entry, tuple) and len(entry) == 2:
            items.append(entry)
        else:
            items.append((entry, None))
    planar: dict[str, tuple[float, ...]] = {}
    for raw_name, raw_scales in items:
        name = ALIASES.get(raw_name, raw_name)
        if name not in families:
            raise TiledsegError(
                f"in_2d names {raw_name!r}, which is not a family of this bank "
                f"({', '.join(families) or 'none'})"
            )
        scales = families[name] if raw_scales is None else _as_tuple(raw_name, raw_scales)
        scales = tuple(float(x) for x in scales)
        stray = [s for s in scales if s not in families[name]]
        if stray:
            raise TiledsegError(
                f"in_2d gives {raw_name!r} scale {stray[0]:g}, a scale the bank does not "
                f"compute it at ({', '.join(f'{s:g}' for s in families[name])})"
            )
        planar[name] = tuple(sorted(set(planar.get(name, ()) + tuple(scales))))
    return {name: scales for name, scales in planar.items() if scales}  # (none: not in 2D)


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
    *,
    ndim: int | None = None,
) -> FeatureBank:
    """Return a bank from a name, a YAML file, a mapping or a bank (``None``: ``"default"``).

    A named bank may have a variant per dimensionality (``default-2d.yaml`` beside
    ``default.yaml``): with ``ndim`` given, that variant is the bank of the name.
    """
    if spec is None:
        spec = "default"
    if isinstance(spec, FeatureBank):
        return spec
    if isinstance(spec, Mapping):
        return FeatureBank.from_dict(spec)
    text = str(spec)
    if ndim is not None and f"{text}-{ndim}d" in NAMED_BANKS:
        return NAMED_BANKS[f"{text}-{ndim}d"]
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

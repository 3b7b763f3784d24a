"""What a feature family is: one object with its outputs, names, reach and kernel.

Every family, built-in (:mod:`tiledseg.features.families`) or plug-in
(:class:`tiledseg.features.plugins.FeaturePlugin`), is a :class:`Family`. A bank
asks its families how many values they give per voxel, how far they reach
beyond a block (its halo), how their components are named, and for their values
on a block; nothing outside a family's own object knows what the family is.

The six ilastik families are :class:`DerivativeFamily` objects: instead of
filtering the image themselves they name the Gaussian derivatives they need and
how they combine them, and the engine computes those derivatives once per scale
for all of them (:class:`tiledseg.features.filters.ScaleTree`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from tiledseg import blocks

if TYPE_CHECKING:
    from tiledseg.features.backend import Backend
    from tiledseg.features.filters import ScaleTree

__all__ = [
    "TRUNCATE",
    "BuiltinFamily",
    "DerivativeFamily",
    "EigenvalueFamily",
    "Family",
    "FamilyDefaults",
    "Region",
    "Values",
    "grow",
    "kernel_radius",
    "unit",
]

Region = tuple[slice, ...]
#: ``(component, values on the block)``, as a family yields them.
Values = Iterator[tuple[int, Any]]

#: Gaussian kernels are cut at this many standard deviations (the 3.5 sigma ilastik
#: uses for its halos; see docs/features.md for how its filters differ).
TRUNCATE = 3.5


def kernel_radius(sigma: float) -> int:
    """Return the radius in voxels of a Gaussian kernel cut at :data:`TRUNCATE` sigma.

    It is the radius scipy.ndimage uses for ``truncate=TRUNCATE``, so a halo of this
    size makes a tiled filter see every voxel the untiled one sees.
    """
    return int(TRUNCATE * float(sigma) + 0.5)


def grow(inner: Region, margin: Sequence[int], shape: Sequence[int]) -> tuple[Region, Region]:
    """Return the block grown by ``margin`` (clipped to ``shape``) and the block inside it."""
    grown = blocks.haloed(inner, margin, shape)
    return grown, blocks.within(inner, grown)


@runtime_checkable
class Family(Protocol):
    """A feature family: what a bank needs to know about it, and its kernel.

    Attributes
    ----------
    name : str
        The name banks use for it.
    scale : str
        What its scale is (``"sigma"``, ``"radius"``, ``"wavelength"``...), for names.
    """

    name: str
    scale: str

    def n_outputs(self, ndim: int) -> int:
        """Return how many values the family gives per voxel in ``ndim`` dimensions."""
        ...

    def margin(self, scale: float, rel: Sequence[float]) -> tuple[int, ...]:
        """Return how far, in voxels along each axis, a value at ``scale`` reads beyond its voxel.

        ``rel`` is the relative spacing of the axes the family is computed on (1 along
        the finest axis of the volume). The bank's halo is the largest margin.
        """
        ...

    def component(self, k: int, n: int) -> int | None:
        """Return the component number in names of the ``k``-th of ``n`` outputs."""
        ...

    def describe_component(self, component: int) -> str:
        """Return how a feature name shows ``component`` (e.g. ``"eigenvalue=0"``)."""
        ...

    def fingerprint(self) -> str:
        """Return a digest of what the family computes, for cache keys."""
        ...

    def values(
        self, image: Any, scale: float, *, inner: Region, rel: Sequence[float], be: Backend
    ) -> Values:
        """Yield ``(component, values on the block)`` of the family at ``scale``.

        ``image`` is one float32 channel of the haloed block (spatial axes only),
        ``inner`` the block inside it (slices with a start and a stop), ``rel`` the
        relative spacing of its axes and ``be`` its array and ndimage namespaces.
        """
        ...


class FamilyDefaults:
    """Defaults of :class:`Family`: components numbered from 0, shown as ``output=k``."""

    def component(self, k: int, n: int) -> int | None:
        """Return ``k``, or None for a family of one output (its names show no component)."""
        return k if n > 1 else None

    def describe_component(self, component: int) -> str:
        """Return ``output=<component>``."""
        return f"output={component}"


class BuiltinFamily(FamilyDefaults):
    """Base of the built-in families: one output, a Gaussian's reach, a sigma as scale.

    A subclass sets :attr:`name` and overrides what differs; one instance of it is
    listed in :data:`tiledseg.features.families.BUILTINS`.
    """

    name: str = ""
    scale: str = "sigma"
    #: Other names a bank file may use for it (ilastik's, for the six ilastik families).
    aliases: ClassVar[tuple[str, ...]] = ()
    #: Whether it is one of ilastik's six families.
    ilastik: ClassVar[bool] = False

    def n_outputs(self, ndim: int) -> int:
        """Return 1: one value per voxel."""
        return 1

    def margin(self, scale: float, rel: Sequence[float]) -> tuple[int, ...]:
        """Return the radius of a Gaussian of ``scale`` along each axis."""
        return tuple(kernel_radius(scale / step) for step in rel)

    def fingerprint(self) -> str:
        """Return the family's name: built-in code changes with tiledseg's version."""
        return f"builtin:{self.name}"

    def values(
        self, image: Any, scale: float, *, inner: Region, rel: Sequence[float], be: Backend
    ) -> Values:
        """Yield ``(component, values on the block)``; subclasses compute them."""
        raise NotImplementedError(f"feature family {self.name!r} has no kernel")

    def __repr__(self) -> str:
        """Return ``<feature family NAME>``."""
        return f"<feature family {self.name}>"


class DerivativeFamily(BuiltinFamily):
    """A family made from the Gaussian derivatives shared by every such family at a scale.

    Subclasses say which derivatives they need (:meth:`orders`) and how they make
    their values from them (:meth:`combine`); the engine computes the union of the
    orders once per scale (:class:`tiledseg.features.filters.ScaleTree`).
    """

    def orders(self, ndim: int) -> set[tuple[int, ...]]:
        """Return the derivative orders it reads, as per-axis tuples (``(0, 1)``: d/dx)."""
        raise NotImplementedError

    def tree_margin(self, sigmas: Sequence[float]) -> tuple[int, ...]:
        """Return how far beyond the block it needs the derivatives (per-axis ``sigmas``)."""
        return (0,) * len(sigmas)

    def combine(self, tree: ScaleTree) -> Values:
        """Yield ``(component, values on the block)`` made from ``tree``'s derivatives."""
        raise NotImplementedError

    def values(
        self, image: Any, scale: float, *, inner: Region, rel: Sequence[float], be: Backend
    ) -> Values:
        """Yield ``(component, values on the block)`` from a tree of this family alone.

        The engine does not call this: it builds one tree per scale for every such
        family of a bank. The values are the same bits either way.
        """
        from tiledseg.features.filters import ScaleTree

        yield from self.combine(ScaleTree(image, scale, [self], inner, rel, be))


class EigenvalueFamily(DerivativeFamily):
    """A family of the eigenvalues, largest first, of a symmetric matrix per voxel."""

    def n_outputs(self, ndim: int) -> int:
        """Return ``ndim``: one eigenvalue per axis."""
        return ndim

    def describe_component(self, component: int) -> str:
        """Return ``eigenvalue=<component>`` (0 is the largest)."""
        return f"eigenvalue={component}"


def unit(ndim: int, *axes: int) -> tuple[int, ...]:
    """Return the derivative order that differentiates once along each of ``axes``."""
    order = [0] * ndim
    for a in axes:
        order[a] += 1
    return tuple(order)

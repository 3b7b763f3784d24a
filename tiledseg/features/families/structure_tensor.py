"""``structure_tensor_eigenvalues``: eigenvalues of ``G_{0.5 s} * (d_a G_s * I)(d_b G_s * I)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tiledseg.features.family import EigenvalueFamily, Values, kernel_radius, unit

if TYPE_CHECKING:
    from tiledseg.features.filters import ScaleTree

#: Structure tensor: gradient at sigma, products smoothed at ST_OUTER_RATIO * sigma, as ilastik.
ST_OUTER_RATIO = 0.5


class StructureTensorEigenvalues(EigenvalueFamily):
    """Eigenvalues, largest first, of the smoothed outer product of the gradient.

    The products are smoothed, so the gradients are needed an outer radius beyond
    the block: its reach is the inner radius plus the outer one.
    """

    name = "structure_tensor_eigenvalues"
    aliases = ("StructureTensorEigenvalues",)
    ilastik = True

    def orders(self, ndim: int) -> set[tuple[int, ...]]:
        """Return the first derivative along each axis."""
        return {unit(ndim, a) for a in range(ndim)}

    def tree_margin(self, sigmas: Sequence[float]) -> tuple[int, ...]:
        """Return the outer Gaussian's radius along each axis."""
        return tuple(kernel_radius(s) for s in self._outer(sigmas))

    def margin(self, scale: float, rel: Sequence[float]) -> tuple[int, ...]:
        """Return the inner plus the outer Gaussian's radius along each axis."""
        return tuple(
            kernel_radius(scale / step) + kernel_radius(ST_OUTER_RATIO * scale / step)
            for step in rel
        )

    def combine(self, tree: ScaleTree) -> Values:
        """Yield the eigenvalues of the tensor, smoothed from gradients on the grown block."""
        grads = [tree.scaled(tree.on_target(tree.unit(a)), a) for a in range(tree.ndim)]
        outer = self._outer(tree.sigmas)
        elements = [
            tree.smoothed(grads[a] * grads[b], outer, tree.in_target) for a, b in tree.pairs
        ]
        yield from enumerate(tree.eigenvalues(elements))

    @staticmethod
    def _outer(sigmas: Sequence[float]) -> tuple[float, ...]:
        return tuple(ST_OUTER_RATIO * s for s in sigmas)


FAMILY = StructureTensorEigenvalues()

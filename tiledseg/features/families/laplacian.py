"""``laplacian_of_gaussian``: ``sum_a d_a d_a G_s * I``, as ``scipy.ndimage.gaussian_laplace``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiledseg.features.family import DerivativeFamily, Values, unit

if TYPE_CHECKING:
    from tiledseg.features.filters import ScaleTree


class LaplacianOfGaussian(DerivativeFamily):
    """The sum of the second derivatives of Gaussian along each axis."""

    name = "laplacian_of_gaussian"
    aliases = ("LaplacianOfGaussian",)
    ilastik = True

    def orders(self, ndim: int) -> set[tuple[int, ...]]:
        """Return the second derivative along each axis."""
        return {unit(ndim, a, a) for a in range(ndim)}

    def combine(self, tree: ScaleTree) -> Values:
        """Yield the sum, in scipy's order: axis 0 first, float32."""
        total = tree.scaled(tree.on_block(tree.unit(0, 0)), 0, 0).copy()
        for a in range(1, tree.ndim):
            total += tree.scaled(tree.on_block(tree.unit(a, a)), a, a)
        yield 0, total


FAMILY = LaplacianOfGaussian()

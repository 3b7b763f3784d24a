"""``hessian_of_gaussian_eigenvalues``: eigenvalues of ``d_a d_b G_s * I``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiledseg.features.family import EigenvalueFamily, Values, unit

if TYPE_CHECKING:
    from tiledseg.features.filters import ScaleTree


class HessianOfGaussianEigenvalues(EigenvalueFamily):
    """Eigenvalues, largest first, of the Hessian of the Gaussian-smoothed image."""

    name = "hessian_of_gaussian_eigenvalues"
    aliases = ("HessianOfGaussianEigenvalues",)
    ilastik = True

    def orders(self, ndim: int) -> set[tuple[int, ...]]:
        """Return every second derivative ``d_a d_b``, ``a <= b``."""
        return {unit(ndim, a, b) for a in range(ndim) for b in range(a, ndim)}

    def combine(self, tree: ScaleTree) -> Values:
        """Yield the eigenvalues of the Hessian's elements on the block."""
        elements = [tree.scaled(tree.on_block(tree.unit(a, b)), a, b) for a, b in tree.pairs]
        yield from enumerate(tree.eigenvalues(elements))


FAMILY = HessianOfGaussianEigenvalues()

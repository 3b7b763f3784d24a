"""``gaussian_gradient_magnitude``: ``sqrt(sum_a (d_a G_s * I)^2)``.

As ``scipy.ndimage.gaussian_gradient_magnitude``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiledseg.features.family import DerivativeFamily, Values, unit

if TYPE_CHECKING:
    from tiledseg.features.filters import ScaleTree


class GaussianGradientMagnitude(DerivativeFamily):
    """The length of the gradient of the Gaussian-smoothed image."""

    name = "gaussian_gradient_magnitude"
    aliases = ("GaussianGradientMagnitude",)
    ilastik = True

    def orders(self, ndim: int) -> set[tuple[int, ...]]:
        """Return the first derivative along each axis."""
        return {unit(ndim, a) for a in range(ndim)}

    def combine(self, tree: ScaleTree) -> Values:
        """Yield the square root of the sum of squares, in scipy's order, float32."""
        total = None
        for a in range(tree.ndim):
            d = tree.scaled(tree.on_block(tree.unit(a)), a)
            if total is None:
                total = d * d
            else:
                total += d * d
        yield 0, tree.be.xp.sqrt(total)


FAMILY = GaussianGradientMagnitude()

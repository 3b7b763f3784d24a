"""``difference_of_gaussians``: ``G_s * I - G_{0.66 s} * I``, as ilastik."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiledseg.features.family import DerivativeFamily, Values, unit

if TYPE_CHECKING:
    from tiledseg.features.filters import ScaleTree

#: Difference of Gaussians: G(sigma) - G(DOG_RATIO * sigma), as ilastik.
DOG_RATIO = 0.66


class DifferenceOfGaussians(DerivativeFamily):
    """The blur at ``s`` minus the blur at :data:`DOG_RATIO` ``s``.

    The narrower Gaussian reaches less far than the wider one, so the halo is the
    wider one's radius.
    """

    name = "difference_of_gaussians"
    aliases = ("DifferenceOfGaussians",)
    ilastik = True

    def orders(self, ndim: int) -> set[tuple[int, ...]]:
        """Return the order-0 derivative (the wider blur, shared with the smoothing)."""
        return {unit(ndim)}

    def combine(self, tree: ScaleTree) -> Values:
        """Yield the shared blur minus the narrower one, computed on the block only."""
        small = tree.smoothed(tree.image, tuple(DOG_RATIO * s for s in tree.sigmas), tree.inner)
        yield 0, tree.on_block(tree.unit()) - small


FAMILY = DifferenceOfGaussians()

"""``gaussian_smoothing``: ``G_s * I``, as ``scipy.ndimage.gaussian_filter``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiledseg.features.family import DerivativeFamily, Values, unit

if TYPE_CHECKING:
    from tiledseg.features.filters import ScaleTree


class GaussianSmoothing(DerivativeFamily):
    """The image blurred by a Gaussian of standard deviation ``s``."""

    name = "gaussian_smoothing"
    aliases = ("multiscale_gaussian", "GaussianSmoothing")
    ilastik = True

    def orders(self, ndim: int) -> set[tuple[int, ...]]:
        """Return the order-0 derivative (the blur itself)."""
        return {unit(ndim)}

    def combine(self, tree: ScaleTree) -> Values:
        """Yield the blur on the block."""
        yield 0, tree.on_block(tree.unit())


FAMILY = GaussianSmoothing()

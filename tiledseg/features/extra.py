"""The families beyond ilastik's six, one family and scale at a time.

Each family's kernel lives with the rest of the family in
:mod:`tiledseg.features.families` (``sobel``, ``local_statistics``, ``rank``,
``gabor``); this module keeps the names that were imported from here. Each kernel
is a pure function of one haloed image (one channel, spatial axes only) and the
block's place in it, and returns the values of the block's own voxels. Each first
crops the input to the block grown by its own reach (so a family at a small scale
does not filter the halo a larger scale needs), filters, and crops the result to
the block. Where the block touches the volume's edge, the crop is the volume's
edge, and the filter's ``reflect`` boundary sees the same voxels as on the whole
volume; so tiled values equal untiled ones bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tiledseg.features.backend import Backend
from tiledseg.features.families import BY_NAME
from tiledseg.features.families.gabor import gabor_kernel
from tiledseg.features.families.rank import ball_footprint
from tiledseg.features.family import Region, Values, grow

__all__ = ["ball_footprint", "extra_features", "gabor_kernel", "grow"]


def extra_features(
    image: Any, family: str, scale: float, inner: Region, rel: Sequence[float], be: Backend
) -> Values:
    """Yield ``(component, values on the block)`` of one built-in family at one scale.

    Parameters
    ----------
    image : float32 array
        One channel of the haloed block.
    family : str
        One of :data:`tiledseg.features.bank.EXTRA_FAMILIES`.
    scale : float
        The bank's scale (a sigma, radius or wavelength in finest-axis voxels).
    inner : tuple of slice
        The block inside ``image``.
    rel : sequence of float
        Relative spacing (1 along the finest axis).
    be : Backend
        The array and ndimage namespaces of ``image``.

    Yields
    ------
    component : int
    values : float32 array of the block's shape
    """
    if family not in BY_NAME:
        raise ValueError(f"unknown feature family {family!r}")
    yield from BY_NAME[family].values(image, scale, inner=inner, rel=rel, be=be)

"""The built-in feature families, one object each, in stack order.

Each module holds one family (or a few that differ by one parameter): its outputs,
names, reach and kernel side by side (:class:`tiledseg.features.family.Family`).
:data:`BUILTINS` is the registry: adding a family is a module here and one line
there. Families are appended, never inserted: the order of :data:`BUILTINS` is the
order of features in a stack, which older models rely on.
"""

from __future__ import annotations

from tiledseg.features.families import (
    difference_of_gaussians,
    gabor,
    gradient_magnitude,
    hessian,
    laplacian,
    local_statistics,
    rank,
    smoothing,
    sobel,
    structure_tensor,
)
from tiledseg.features.family import BuiltinFamily

__all__ = ["ALIASES", "BUILTINS", "BY_NAME"]

#: The built-in families, in the order their features appear in a stack.
BUILTINS: tuple[BuiltinFamily, ...] = (
    # ilastik's six, computed together from one set of Gaussian derivatives per scale
    smoothing.FAMILY,
    laplacian.FAMILY,
    gradient_magnitude.FAMILY,
    difference_of_gaussians.FAMILY,
    structure_tensor.FAMILY,
    hessian.FAMILY,
    # the families after ilastik's, each computed on its own
    sobel.FAMILY,
    local_statistics.MEAN,
    local_statistics.VARIANCE,
    local_statistics.STD,
    rank.MEDIAN,
    rank.MINIMUM,
    rank.MAXIMUM,
    gabor.FAMILY,
)

#: Each built-in family by name.
BY_NAME: dict[str, BuiltinFamily] = {family.name: family for family in BUILTINS}

#: Other accepted names (ilastik's, so that an ilastik feature table can be pasted) to
#: the family's own.
ALIASES: dict[str, str] = {alias: family.name for family in BUILTINS for alias in family.aliases}

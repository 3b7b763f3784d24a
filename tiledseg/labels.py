"""What a label map may hold: the checks shared by scribbles, truth and predictions.

A label map holds integers: 0 (unlabelled, or not scored) and positive class values,
at most :data:`MAX_CLASSES` of them. An intensity image given where a label map is
wanted fails these checks in one line, instead of training on (or scoring against)
hundreds of grey values.
"""

from __future__ import annotations

import numpy as np

from tiledseg.errors import InputDataError

__all__ = ["MAX_CLASSES", "check_class_count", "label_values"]

#: More classes than this is almost surely an image given as a label map (255 grey values).
MAX_CLASSES = 100


def label_values(data: np.ndarray, *, role: str, name: str) -> np.ndarray:
    """Return ``data`` as int64, refusing NaN, fractional or negative values.

    Parameters
    ----------
    data : ndarray
        A region of the label map.
    role, name : str
        What the map is (``"labels"``, ``"truth"``) and its name, for the message.
    """
    if data.dtype.kind == "b":
        return data.astype(np.int64)
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise InputDataError(f"{role} {name} {_hold(role)} NaN or infinite values")
        if not np.array_equal(data, np.round(data)):
            bad = data[data != np.round(data)][0]
            raise InputDataError(
                f"{role} {name} {_hold(role)} fractional value {bad:g}; {_values(role)} are "
                "integers (0 = unlabelled, 1, 2, ... = classes): is it an image?"
            )
    if data.size and data.min() < 0:
        raise InputDataError(
            f"{role} {name} {_hold(role)} negative value {int(data.min())}; {_values(role)} are "
            "0 (unlabelled) or positive class values"
        )
    return data.astype(np.int64)


def check_class_count(classes: np.ndarray, *, role: str, name: str) -> None:
    """Refuse more than :data:`MAX_CLASSES` class values (an image given as a label map)."""
    if len(classes) > MAX_CLASSES:
        raise InputDataError(
            f"{role} {name} {_hold(role)} {len(classes)} classes; a label map has a few "
            f"(at most {MAX_CLASSES}): is it the image, or a dense label map, given as {role}?"
        )


def _hold(role: str) -> str:
    return "hold" if role.endswith("s") else "holds"  # labels hold, truth holds


def _values(role: str) -> str:
    return role if role.endswith("s") else f"{role} values"  # labels are, truth values are

"""Reading the YAML files users write (configs, feature banks), with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tiledseg.errors import TiledsegError

__all__ = ["read_yaml"]


def read_yaml(path: str | Path, *, what: str) -> Any:
    """Parse a YAML file safely; a missing file or bad YAML is a one-line error naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise TiledsegError(f"{what} {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise TiledsegError(
            f"{what} {str(path)!r} is not a YAML text file (it holds binary data: an image or "
            "a model given in its place?)"
        ) from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())  # one line: the parser's message spans several
        raise TiledsegError(f"{what} {str(path)!r} is not valid YAML: {detail}") from None

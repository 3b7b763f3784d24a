"""OpenMP's wait policy for the work tiledseg starts.

XGBoost's OpenMP threads spin while they wait: on a shared node a 2-thread fit took
25-90x longer than with passive waiting (benchmarks/RESULTS.md). The runtime reads
``OMP_WAIT_POLICY`` once, when it is loaded, so the value must be in the environment
before tiledseg first imports XGBoost or scikit-learn; worker processes tiledseg starts
inherit it. It is set when tiledseg starts work (training, prediction, loading a model,
clustering, a cluster, the command line), not when ``tiledseg`` is imported, and a
user's own setting wins.
"""

from __future__ import annotations

import os

__all__ = ["passive_waits"]


def passive_waits() -> None:
    """Make OpenMP threads wait passively, unless the user chose otherwise."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

"""One block on one thread: the feature pass and the classifier, timed apart.

A 64x128x128 block of a 128^3 phantom (strokes) with the 3D default bank; the model is
trained on the phantom's scribbles with each forest below. Best of ``--repeats`` under
``threadpool_limits(1)``: the figures issue 15 asks for per block (benchmarks/RESULTS.md,
section 10).

    python benchmarks/block_kernels.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time


def _best(repeats: int, func, *args, **kwargs) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func(*args, **kwargs)
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import numpy as np
    from threadpoolctl import threadpool_limits

    import tiledseg as ts
    from tiledseg.classifiers import ForestClassifier
    from tiledseg.features.filters import block_features
    from tiledseg.testing import make_phantom

    phantom = make_phantom((128,) * 3, scribbles="strokes", seed=0)
    forests = {
        "default (50 trees, depth 10)": "random-forest",
        "ilastik's (100 trees, pure)": ForestClassifier(trees=100, depth=None),
    }
    for name, classifier in forests.items():
        model = ts.train(phantom.image, phantom.scribbles, cache_dir=None, classifier=classifier)
        halo = model.bank.halo((1.0, 1.0, 1.0))[0]
        haloed = phantom.image.astype(np.float32)[None, : 64 + halo]
        inner = (slice(0, 64), slice(0, 128), slice(0, 128))
        with threadpool_limits(1):
            features = block_features(haloed, bank=model.bank, inner=inner)
            X = np.ascontiguousarray(features.reshape(features.shape[0], -1).T)
            model.predict_proba(X[:1000])  # the kernel compiled or loaded first
            t_features = _best(args.repeats, block_features, haloed, bank=model.bank, inner=inner)
            t_forest = _best(args.repeats, model.predict_proba, X, n_threads=1)
        n = X.shape[0] / 1e6
        depth = model.classifier.packed.depths.mean()
        print(
            f"{name}: {X.shape[0]} voxels, {X.shape[1]} features: features {t_features:.3f} s "
            f"({n / t_features:.2f} Mvox/s), forest {t_forest:.3f} s ({n / t_forest:.2f} Mvox/s, "
            f"mean tree depth {depth:.1f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

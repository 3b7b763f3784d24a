"""One block on one thread: the feature pass and the classifier, timed apart.

Features: a 64x128x128 block of a 128^3 phantom (strokes) with the 3D default bank, and a
1024x1024 block (halo on every side) of a 2D phantom with the 2D default bank, each
computed with the compiled 1-D passes (``numba``, tiledseg.features._kernels) and with
scipy.ndimage's (``scipy``, the reference), the two alternated repeat by repeat so a
loaded machine slows both alike; the outputs are checked equal to the bit. Best wall
time and best CPU time of the thread (which a shared machine inflates less) are shown. Forest: the
model trained on the 3D phantom's scribbles with each forest below. Best of ``--repeats``
under ``threadpool_limits(1)``: the figures issue 15 asks for per block
(benchmarks/RESULTS.md, section 10).

    python benchmarks/block_kernels.py [--repeats 3] [--features-backend both] [--skip-forest]
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


def _features(repeats: int, backends: list[str]) -> None:
    """Time block_features on a 3D and a 2D block with each backend of the 1-D passes."""
    import numpy as np

    from tiledseg.features import filters
    from tiledseg.features.bank import resolve_bank
    from tiledseg.testing import make_phantom

    bank = resolve_bank("default")
    cases = {}
    volume = make_phantom((128,) * 3, scribbles="strokes", seed=0).image.astype(np.float32)
    halo = bank.halo((1.0,) * 3)[0]
    # the block at the top of the volume: halo below it only, as a corner block is read
    cases["3D 64x128x128"] = (
        volume[None, : 64 + halo],
        (slice(0, 64), slice(0, 128), slice(0, 128)),
    )
    halo = bank.halo((1.0,) * 2)[0]
    image = make_phantom((1024 + 2 * halo,) * 2, seed=0).image.astype(np.float32)
    cases["2D 1024x1024"] = (image[None], (slice(halo, halo + 1024),) * 2)

    for name, (haloed, inner) in cases.items():
        wall = dict.fromkeys(backends, float("inf"))
        cpu = dict.fromkeys(backends, float("inf"))
        results = {}
        for backend in backends:  # compiled or loaded, and caches warm, before timing
            filters._KERNELS = backend
            results[backend] = filters.block_features(haloed, bank=bank, inner=inner)
        for _ in range(repeats):
            for backend in backends:
                filters._KERNELS = backend
                started, started_cpu = time.perf_counter(), time.thread_time()
                filters.block_features(haloed, bank=bank, inner=inner)
                cpu[backend] = min(cpu[backend], time.thread_time() - started_cpu)
                wall[backend] = min(wall[backend], time.perf_counter() - started)
        filters._KERNELS = "numba"
        voxels = results[backends[0]][0].size / 1e6
        line = f"features {name}, {results[backends[0]].shape[0]} features: " + ", ".join(
            f"{b} {wall[b]:.3f} s ({voxels / wall[b]:.2f} Mvox/s; cpu {cpu[b]:.3f} s)"
            for b in backends
        )
        if len(backends) == 2:
            equal = np.array_equal(results["scipy"], results["numba"])
            line += (
                f"; scipy/numba {wall['scipy'] / wall['numba']:.2f}x "
                f"(cpu {cpu['scipy'] / cpu['numba']:.2f}x), equal to the bit: {equal}"
            )
        print(line, flush=True)


def _forests(repeats: int) -> None:
    import numpy as np

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
        features = block_features(haloed, bank=model.bank, inner=inner)
        X = np.ascontiguousarray(features.reshape(features.shape[0], -1).T)
        model.predict_proba(X[:1000])  # the kernel compiled or loaded first
        t_features = _best(repeats, block_features, haloed, bank=model.bank, inner=inner)
        t_forest = _best(repeats, model.predict_proba, X, n_threads=1)
        n = X.shape[0] / 1e6
        depth = model.classifier.packed.depths.mean()
        print(
            f"{name}: {X.shape[0]} voxels, {X.shape[1]} features: features {t_features:.3f} s "
            f"({n / t_features:.2f} Mvox/s), forest {t_forest:.3f} s ({n / t_forest:.2f} Mvox/s, "
            f"mean tree depth {depth:.1f})",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--features-backend",
        choices=["both", "numba", "scipy"],
        default="both",
        help="1-D passes of the feature pass: the compiled ones, scipy's, or both alternated",
    )
    parser.add_argument("--skip-forest", action="store_true", help="time the features only")
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    backends = ["scipy", "numba"] if args.features_backend == "both" else [args.features_backend]
    with threadpool_limits(1):
        _features(args.repeats, backends)
        if not args.skip_forest:
            _forests(args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

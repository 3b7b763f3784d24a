"""Graph-cut smoothing: the energy and its solver, and the seamless blockwise plan.

The blockwise result is compared with the same energy solved over the whole
volume as one block: at least 99.9% of voxels agree, and labels change across
block-border planes no more often than across interior planes.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import zarr

import tiledseg as ts
from tiledseg.blocks import plan_blocks
from tiledseg.errors import TiledsegError
from tiledseg.smoothing import energy
from tiledseg.smoothing.tiled import (
    SmoothingPlan,
    SmoothSettings,
    image_beta,
    smoothed_label_tasks,
)
from tiledseg.testing import make_phantom
from tiledseg.volume import open_volume

#: Small scales: a noisy classifier, with speckle for the graph cut to remove, and a
#: halo of a few voxels, so that the volumes below cut into blocks a third of their side.
NOISY_BANK = {
    "gaussian_smoothing": [0.7, 1.6],
    "gaussian_gradient_magnitude": [1.0],
    "difference_of_gaussians": [1.0],
}


def brute_force_energy(unary, image, labels, *, fixed, beta, weight, neighbours):
    """The integer energy of ``labels`` as :func:`energy.solve` defines it.

    With ``fixed``, the constant part is left out: the fixed voxels' own unary terms
    and the edges between two fixed voxels.
    """
    shape = labels.shape
    held = np.zeros(shape, dtype=bool) if fixed is None else fixed >= 0
    picked = unary.reshape(-1, unary.shape[-1])[np.arange(labels.size), labels.ravel()]
    total = int(picked[~held.ravel()].sum())
    for offset in energy.neighbour_offsets(len(shape), neighbours):
        a, b = energy._pair_slices(shape, offset)
        w = energy._pair_weights(
            image,
            offset,
            beta=beta,
            weight=weight,
            spacing=(1.0,) * len(shape),
            neighbours=neighbours,
        )
        total += int(w[(labels[a] != labels[b]) & ~(held[a] & held[b])].sum())
    return total


@pytest.mark.parametrize("neighbours", [4, 8])
@pytest.mark.parametrize("with_fixed", [False, True], ids=["free", "fixed-ring"])
def test_two_labels_reach_the_exact_minimum(neighbours, with_fixed):
    # with two labels one expansion move is an exact binary graph cut: compare with
    # the minimum over every labelling
    rng = np.random.default_rng(neighbours + 10 * with_fixed)
    shape = (3, 4)
    for _ in range(5):
        proba = rng.dirichlet([0.7, 0.7], size=shape).astype(np.float32)
        unary = energy.unary_costs(proba.reshape(-1, 2)).reshape(*shape, 2)
        image = rng.integers(0, 255, size=(1, *shape)).astype(np.uint8)
        fixed = None
        if with_fixed:
            fixed = np.full(shape, -1, dtype=np.int16)
            fixed[0, :] = rng.integers(0, 2, size=shape[1])
        kwargs = {"beta": 1e-4, "weight": 3.0, "neighbours": neighbours}
        got = energy.solve(unary, image, fixed=fixed, spacing=(1.0, 1.0), **kwargs)
        if fixed is not None:
            assert np.array_equal(got[0], fixed[0])
        best = None
        free = np.ones(shape, dtype=bool) if fixed is None else fixed < 0
        n_free = int(free.sum())
        for bits in itertools.product((0, 1), repeat=n_free):
            labels = np.zeros(shape, dtype=np.int64) if fixed is None else fixed.astype(np.int64)
            labels[free] = bits
            e = brute_force_energy(unary, image, labels, fixed=fixed, **kwargs)
            best = e if best is None else min(best, e)
        assert brute_force_energy(unary, image, got.astype(np.int64), fixed=fixed, **kwargs) == best


def test_a_window_with_its_own_solution_held_around_it_keeps_it():
    # exact for two labels (for more, alpha-expansion's local minimum may move)
    rng = np.random.default_rng(3)
    proba = rng.dirichlet([0.5, 0.5], size=(16, 16, 16)).astype(np.float32)
    unary = energy.unary_costs(proba.reshape(-1, 2)).reshape(16, 16, 16, 2)
    image = rng.integers(0, 255, size=(1, 16, 16, 16)).astype(np.uint8)
    kwargs = {"beta": 1e-3, "weight": 2.0, "spacing": (1.0, 1.0, 1.0), "neighbours": 6}
    whole = energy.solve(unary, image, **kwargs)
    assert (whole != proba.argmax(-1)).any()  # the cut changed something
    fixed = whole.astype(np.int16)
    fixed[1:-1, 1:-1, 1:-1] = -1
    assert np.array_equal(energy.solve(unary, image, fixed=fixed, **kwargs), whole)


def test_unary_costs_are_quantised_negative_log_probabilities():
    proba = np.array([[1.0, 0.0], [0.5, 0.5], [1e-9, 1.0]], dtype=np.float32)
    costs = energy.unary_costs(proba)
    assert costs.dtype == np.uint16
    assert costs.tolist() == [[0, 13816], [693, 693], [13816, 0]]


def test_neighbourhoods():
    for ndim, n in [(2, 4), (2, 8), (3, 6), (3, 26)]:
        offsets = energy.neighbour_offsets(ndim, n)
        assert len(offsets) == n // 2
        # both directions of the full neighbourhood, each once
        assert len({o for o in offsets} | {tuple(-v for v in o) for o in offsets}) == n
    for bad in (4, "six", 6.9, True):
        with pytest.raises(TiledsegError, match="6 or 26"):
            energy.check_neighbours(bad, 3)
    assert energy.check_neighbours("26", 3) == 26


@pytest.mark.parametrize("weight", [0, -1.0, float("nan"), float("inf"), 2000.0, "x", True])
def test_bad_weights(weight):
    with pytest.raises(TiledsegError, match="smooth weight"):
        energy.check_weight(weight)


def test_contrast_scale_does_not_depend_on_the_grid():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, size=(2, 23, 17, 19)).astype(np.uint16)
    whole = energy.squared_difference_sums(image, (slice(0, 23), slice(0, 17), slice(0, 19)))
    total, count = 0.0, 0
    for b in plan_blocks((23, 17, 19), (7, 9, 5), (0, 0, 0)):
        grown = tuple(
            slice(s.start, min(s.stop + 1, n)) for s, n in zip(b.region, (23, 17, 19), strict=True)
        )
        inner = tuple(slice(0, s.stop - s.start) for s in b.region)
        t, c = energy.squared_difference_sums(image[(slice(None), *grown)], inner)
        total, count = total + t, count + c
    assert (total, count) == whole
    assert count == 22 * 17 * 19 + 23 * 16 * 19 + 23 * 17 * 18
    assert energy.beta_from_sums(0.0, 10) == 0.0


def test_solves_on_many_threads_at_once_match_one_at_a_time():
    # the compiled solver releases the GIL and shares nothing between calls
    rng = np.random.default_rng(5)
    problems = []
    for _ in range(12):
        proba = rng.dirichlet([0.5] * 3, size=(12, 12, 12)).astype(np.float32)
        unary = energy.unary_costs(proba.reshape(-1, 3)).reshape(12, 12, 12, 3)
        image = rng.integers(0, 255, size=(1, 12, 12, 12)).astype(np.uint8)
        problems.append((unary, image))
    kwargs = {"beta": 1e-3, "weight": 2.0, "spacing": (1.0, 1.0, 1.0), "neighbours": 26}
    expected = [energy.solve(u, i, **kwargs) for u, i in problems]
    results: dict[tuple[int, int], np.ndarray] = {}

    def work(t):
        for _ in range(3):
            for j, (u, i) in enumerate(problems):
                results[t, j] = energy.solve(u, i, **kwargs)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 * len(problems)
    for (_, j), got in results.items():
        assert np.array_equal(got, expected[j])


def _padded_problem(rng, shape, neighbours):
    """Random terminal and arc capacities on a padded grid, as the solver lays them out."""
    from tiledseg.smoothing import _grid_cut

    padded = tuple(n + 2 for n in shape)
    offsets = energy.neighbour_offsets(len(shape), neighbours)
    disp = _grid_cut._displacements(padded, offsets)
    inner = np.zeros(padded, dtype=bool)
    inner[(slice(1, -1),) * len(shape)] = True
    inner = inner.ravel()
    n = inner.size
    tr = np.where(inner, rng.integers(-9, 10, size=n), 0).astype(np.int32)
    rc = np.zeros((n, len(disp)), dtype=np.int32)
    for d, step in enumerate(disp):
        ends = np.flatnonzero(inner)
        ends = ends[inner[ends + step]]
        rc[ends, d] = rng.integers(0, 7, size=ends.size)
    return tr, rc, disp


@pytest.mark.parametrize(
    ("shape", "neighbours"), [((7, 9), 4), ((6, 8), 8), ((4, 5, 6), 6), ((4, 4, 5), 26)]
)
def test_the_grid_max_flow_equals_scipys_and_its_cut_carries_it(shape, neighbours):
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    from tiledseg.smoothing import _grid_cut

    rng = np.random.default_rng(len(shape) * 100 + neighbours)
    for _ in range(4):
        tr, rc, disp = _padded_problem(rng, shape, neighbours)
        n = tr.size
        # the same network with explicit arcs: source n, sink n + 1
        rows, cols, caps = [], [], []
        for d, step in enumerate(disp):
            ends = np.flatnonzero(rc[:, d])
            rows += ends.tolist()
            cols += (ends + step).tolist()
            caps += rc[ends, d].tolist()
        for i in np.flatnonzero(tr > 0):
            rows.append(n), cols.append(i), caps.append(tr[i])
        for i in np.flatnonzero(tr < 0):
            rows.append(i), cols.append(n + 1), caps.append(-tr[i])
        graph = csr_matrix((caps, (rows, cols)), shape=(n + 2, n + 2), dtype=np.int32)
        expected = maximum_flow(graph, n, n + 1).flow_value
        state = _grid_cut._workspace(n, len(disp))
        flow = _grid_cut._max_flow(tr.copy(), rc.copy(), disp, *state)
        assert flow == expected
        parent, sink = state[0], state[1]
        on_sink = (sink == 1) & (parent >= 0)
        # the cut the search trees give: every arc from the source side to the sink side
        cut = int(tr[on_sink & (tr > 0)].sum() - tr[~on_sink & (tr < 0)].sum())
        for d, step in enumerate(disp):
            ends = np.flatnonzero(~on_sink & (rc[:, d] > 0))
            cut += int(rc[ends[on_sink[ends + step]], d].sum())
        assert cut == expected


def test_a_converged_expansion_leaves_no_move_that_lowers_the_energy():
    # with three labels the result is a local minimum: no expansion move lowers it
    rng = np.random.default_rng(11)
    shape = (3, 4)
    kwargs = {"beta": 1e-4, "weight": 2.0, "neighbours": 8}
    for _ in range(6):
        proba = rng.dirichlet([0.6] * 3, size=shape).astype(np.float32)
        unary = energy.unary_costs(proba.reshape(-1, 3)).reshape(*shape, 3)
        image = rng.integers(0, 255, size=(1, *shape)).astype(np.uint8)
        got = energy.solve(unary, image, spacing=(1.0, 1.0), iterations=-1, **kwargs)
        reached = brute_force_energy(unary, image, got.astype(np.int64), fixed=None, **kwargs)
        for alpha in range(3):
            for switch in itertools.product((False, True), repeat=got.size):
                moved = np.where(np.reshape(switch, shape), alpha, got).astype(np.int64)
                assert brute_force_energy(unary, image, moved, fixed=None, **kwargs) >= reached
        # a cycle keeps only moves that lower the energy, from the first label everywhere
        one = energy.solve(unary, image, spacing=(1.0, 1.0), iterations=1, **kwargs)
        start = brute_force_energy(unary, image, np.zeros(shape, np.int64), fixed=None, **kwargs)
        after_one = brute_force_energy(unary, image, one.astype(np.int64), fixed=None, **kwargs)
        assert reached <= after_one <= start


# -- blockwise == whole -------------------------------------------------------------------


def change_rates(labels: np.ndarray, block: tuple[int, ...], near: int = 4) -> tuple[float, float]:
    """Fraction of neighbour pairs with different labels across border planes and nearby planes.

    The interior planes compared are those within ``near`` planes of a border: the
    content changes slowly across a volume, a seam changes the rate at the border alone.
    """
    border, interior = [], []
    for axis, size in enumerate(block):
        moved = np.moveaxis(labels, axis, 0)
        changes = (moved[1:] != moved[:-1]).reshape(moved.shape[0] - 1, -1).mean(axis=1)
        for plane, rate in enumerate(changes, start=1):
            offset = min(plane % size, size - plane % size)
            if offset == 0:
                border.append(rate)
            elif offset <= near:
                interior.append(rate)
    return float(np.mean(border)), float(np.mean(interior))


@pytest.fixture(scope="module", params=["2d", "3d"])
def noisy(request, tmp_path_factory):
    """A noisy phantom (noise 3x the phase step), a model, and the whole-volume graph cut."""
    shape = (300, 285) if request.param == "2d" else (62, 60, 64)
    ph = make_phantom(shape, n_classes=3, noise=3.0, scribbles="strokes", seed=4)
    model = ts.train(ph.image, ph.scribbles, features=NOISY_BANK, cache_dir=None)
    root = tmp_path_factory.mktemp(f"noisy{request.param}")
    whole = ts.predict(
        ph.image, model, out=root / "whole.zarr", block=max(shape), smooth="graphcut"
    )
    assert whole.blocks == 1
    return ph, model, root, zarr.open_array(str(root / "whole.zarr/labels/0"))[...]


def test_blocks_a_third_of_the_side_agree_with_the_whole_volume(noisy):
    ph, model, root, whole = noisy
    block = tuple(-(-n // 3) for n in ph.image.shape)  # uneven: the last block is smaller
    result = ts.predict(ph.image, model, out=root / "tiled.zarr", block=block, smooth="graphcut")
    assert result.blocks == 3**ph.image.ndim
    tiled = zarr.open_array(str(root / "tiled.zarr/labels/0"))[...]
    agreement = float(np.mean(tiled == whole))
    assert agreement >= 0.999, agreement
    # labels change as often across the block-border planes as across the planes
    # next to them. The content alone moves that ratio by several percent on a few
    # planes of a small volume (phases are ~10 voxels wide), so the ratio is set
    # against the whole-volume solve's over the same planes: a seam is the excess.
    border, interior = change_rates(tiled, block)
    whole_border, whole_interior = change_rates(whole, block)
    assert (border / interior) / (whole_border / whole_interior) <= 1.05, (
        border / interior,
        whole_border / whole_interior,
    )


def test_without_margin_and_seam_passes_the_seams_show(noisy):
    # the control: the same blocks solved alone fail the criteria the test above passes,
    # and each of the two mechanisms is seen at work
    ph, model, root, whole = noisy
    volume = open_volume(ph.image)
    volume.spacing = tuple(model.spacing)
    block = tuple(-(-n // 3) for n in ph.image.shape)
    probabilities = ts.predict(
        ph.image, model, out=root / "proba.zarr", block=block, probabilities=True
    )
    proba = zarr.open_array(f"{probabilities.path}/probabilities/0")[...]
    # costs from the stored (uint8) probabilities: the same for both plans compared
    stack = np.moveaxis(proba, 0, -1).astype(np.float32) / 255.0
    costs_all = energy.unary_costs(stack.reshape(-1, 3)).reshape(*ph.image.shape, 3)
    import dask

    from tiledseg.cluster import open_executor

    with open_executor(quiet=True) as executor:
        beta = image_beta(volume, executor, sigma=1.0)

    def solved(settings, grid=block):
        plan = plan_blocks(volume.shape, grid, model.halo)
        costs = {b.index: dask.delayed(costs_all[b.region]) for b in plan}
        tasks = smoothed_label_tasks(
            plan, costs, volume=volume, beta=beta, spacing=model.spacing, settings=settings
        )
        computed = dask.compute(tasks, scheduler="sync")[0]
        labels = np.zeros(ph.image.shape, dtype=np.uint8)
        for b in plan:
            labels[b.region] = computed[b.index]
        return labels

    n = 2 * ph.image.ndim
    one = solved(SmoothSettings(2.0, n), grid=ph.image.shape)  # the whole volume as one block
    alone = solved(SmoothSettings(2.0, n, margin=0, seam=0))
    seams_only = solved(SmoothSettings(2.0, n, margin=0, seam=4))
    seamless = solved(SmoothSettings(2.0, n))

    def excess(labels):
        border, interior = change_rates(labels, block)
        return border / interior

    # blocks solved alone show their borders; the seam passes alone remove most of it,
    # and with the margin the result is the whole-volume solve's
    assert excess(alone) > 1.05 or np.mean(alone == one) < 0.999
    assert excess(seams_only) < excess(alone)
    assert np.mean(seams_only == one) > np.mean(alone == one)
    assert np.mean(seamless == one) >= 0.999
    assert excess(seamless) <= excess(one) * 1.05


def test_smoothing_improves_a_noisy_volume(noisy):
    ph, model, root, whole = noisy
    raw = ts.predict(ph.image, model, out=root / "raw.zarr")
    before = ts.evaluate(raw.path, ph.truth)["mean_iou"]
    after = ts.evaluate(str(root / "whole.zarr"), ph.truth)["mean_iou"]
    assert after >= before + 0.02, (before, after)


# -- predict with smoothing ---------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    ph = make_phantom((40, 36, 44), n_classes=3, noise=2.0, seed=7)
    model = ts.train(ph.image, ph.scribbles, features=NOISY_BANK, cache_dir=None)
    return ph, model, tmp_path_factory.mktemp("small")


def test_probabilities_stay_in_memory_unless_asked(small):
    ph, model, root = small
    ts.predict(ph.image, model, out=root / "a.zarr", block=16, smooth="graphcut")
    group = zarr.open_group(str(root / "a.zarr"), mode="r")
    assert sorted(group.group_keys()) == ["labels"]
    info = group.attrs["tiledseg"]
    assert info["complete"]
    assert info["smoothing"]["method"] == "graphcut"
    assert info["smoothing"]["weight"] == 2.0
    assert info["smoothing"]["beta"] > 0
    ts.predict(
        ph.image,
        model,
        out=root / "b.zarr",
        block=16,
        smooth="graphcut",
        probabilities=True,
        uncertainty=True,
    )
    ts.predict(ph.image, model, out=root / "c.zarr", block=16, probabilities=True)
    smoothed = zarr.open_group(str(root / "b.zarr"), mode="r")
    plain = zarr.open_group(str(root / "c.zarr"), mode="r")
    # probabilities are the classifier's: smoothing changes only the labels
    assert np.array_equal(smoothed["probabilities/0"][...], plain["probabilities/0"][...])
    assert np.array_equal(smoothed["labels/0"][...], group["labels/0"][...])
    assert not np.array_equal(smoothed["labels/0"][...], plain["labels/0"][...])
    assert set(np.unique(smoothed["labels/0"][...])) <= set(model.classes.tolist())


def test_info_shows_the_smoothing_of_an_output(small, capsys):
    from tiledseg.cli import main

    ph, model, root = small
    out = root / "info.zarr"
    ts.predict(ph.image, model, out=out, smooth="graphcut", smooth_weight=1.5)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if "smoothing:" in x][0]
    assert "graphcut (weight 1.5, neighbours 6, margin 16, seam 4, iterations 1" in line
    assert "beta " in line


def test_worker_processes_give_the_threaded_result(small):
    ph, model, root = small
    a = ts.predict(ph.image, model, out=root / "t.zarr", block=16, smooth="graphcut")
    b = ts.predict(ph.image, model, out=root / "w.zarr", block=16, smooth="graphcut", workers=2)
    assert np.array_equal(
        zarr.open_array(f"{a.path}/labels/0")[...], zarr.open_array(f"{b.path}/labels/0")[...]
    )


def test_roi_smooths_the_blocks_it_meets(small):
    ph, model, root = small
    ts.predict(
        ph.image, model, out=root / "roi.zarr", block=16, smooth="graphcut", roi="0:16,16:32,:"
    )
    labels = zarr.open_array(str(root / "roi.zarr/labels/0"))[...]
    assert (labels[:16, 16:32] > 0).all()
    assert (labels[16:] == 0).all()
    assert (labels[:, :16] == 0).all()


def test_one_expansion_cycle_and_convergence_agree_closely(small, tmp_path):
    ph, model, _ = small
    one = ts.predict(ph.image, model, out=tmp_path / "one.zarr", smooth="graphcut")
    converged = ts.predict(
        ph.image, model, out=tmp_path / "conv.zarr", smooth="graphcut", smooth_iterations=-1
    )
    a = zarr.open_array(f"{one.path}/labels/0")[...]
    b = zarr.open_array(f"{converged.path}/labels/0")[...]
    assert 0.99 < np.mean(a == b)
    info = zarr.open_group(converged.path, mode="r").attrs["tiledseg"]["smoothing"]
    assert info["iterations"] == -1


def test_26_neighbours_with_anisotropic_spacing(small, tmp_path):
    ph, _, root = small
    model = ts.train(ph.image, ph.scribbles, features=NOISY_BANK, spacing="3,1,1", cache_dir=None)
    a = ts.predict(ph.image, model, out=tmp_path / "a.zarr", smooth="graphcut")
    b = ts.predict(
        ph.image, model, out=tmp_path / "b.zarr", smooth="graphcut", smooth_neighbours=26
    )
    la = zarr.open_array(f"{a.path}/labels/0")[...]
    lb = zarr.open_array(f"{b.path}/labels/0")[...]
    assert 0.9 < np.mean(la == lb) < 1.0


def test_waves_hold_a_few_rows_of_blocks_whatever_the_length():
    # what a wave keeps for later rows is bounded by the cross-section, not the length
    import dask

    rng = np.random.default_rng(2)
    held = {}
    for rows in (8, 13):
        shape = (rows * 8, 16, 12)
        proba = rng.dirichlet([2.0] * 3, size=shape).astype(np.float32)
        costs_all = energy.unary_costs(proba.reshape(-1, 3)).reshape(*shape, 3)
        image = rng.integers(0, 255, size=shape).astype(np.uint8)
        volume = open_volume(image)
        blocks = plan_blocks(shape, (8, 8, 6), (0, 0, 0))
        plan = SmoothingPlan(
            blocks, volume=volume, beta=1e-3, spacing=(1, 1, 1), settings=SmoothSettings(2.0, 6)
        )
        kept_sizes = []

        def persist(objs, kept_sizes=kept_sizes):
            kept_sizes.append(len(objs))
            return list(dask.persist(*objs, scheduler="sync"))

        got = np.zeros(shape, dtype=np.uint8)

        def write(block, labels, got=got):
            return dask.delayed(got.__setitem__)(block.region, labels)

        plan.run(
            costs=lambda b, c=costs_all: dask.delayed(c[b.region]),
            write=write,
            persist=persist,
        )
        expected = smoothed_label_tasks(
            blocks,
            {b.index: dask.delayed(costs_all[b.region]) for b in blocks},
            volume=volume,
            beta=1e-3,
            spacing=(1, 1, 1),
            settings=SmoothSettings(2.0, 6),
        )
        whole = np.zeros(shape, dtype=np.uint8)
        computed = dask.compute(expected, scheduler="sync")[0]
        for b in blocks:
            whole[b.region] = computed[b.index]
        assert np.array_equal(got, whole)
        held[rows] = max(kept_sizes)
    assert held[13] == held[8], held


@pytest.fixture(scope="module")
def in_process_scheduler():
    """A dask scheduler whose workers are threads of this process (so a patch reaches them)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


def test_a_failing_solve_on_a_cluster_fails_the_run(
    small, tmp_path, monkeypatch, in_process_scheduler
):
    ph, model, _ = small
    real = energy.solve

    def failing(unary, *args, **kwargs):
        if unary.shape[0] > 20:  # the first-pass windows, not the thin seam slabs
            raise RuntimeError("solver failed on purpose")
        return real(unary, *args, **kwargs)

    monkeypatch.setattr(energy, "solve", failing)
    # every block's first pass fails, so every block is reported, none is marked done
    with pytest.raises(ts.BlocksFailedError, match="RuntimeError: solver failed on purpose"):
        ts.predict(
            ph.image,
            model,
            out=tmp_path / "f.zarr",
            block=16,
            smooth="graphcut",
            scheduler=in_process_scheduler,
        )
    assert not zarr.open_group(str(tmp_path / "f.zarr"), mode="r").attrs["tiledseg"]["complete"]


def test_two_runs_at_once_on_one_cluster_keep_their_own_results(
    small, tmp_path, in_process_scheduler
):
    ph, model, _ = small
    other = make_phantom(ph.image.shape, n_classes=3, noise=2.0, seed=11)
    expected = {}
    for name, image in (("a", ph.image), ("b", other.image)):
        r = ts.predict(image, model, out=tmp_path / f"{name}0.zarr", block=16, smooth="graphcut")
        expected[name] = zarr.open_array(f"{r.path}/labels/0")[...]
    results = {}

    def run(name, image):
        r = ts.predict(
            image,
            model,
            out=tmp_path / f"{name}1.zarr",
            block=16,
            smooth="graphcut",
            scheduler=in_process_scheduler,
        )
        results[name] = zarr.open_array(f"{r.path}/labels/0")[...]

    threads = [
        threading.Thread(target=run, args=("a", ph.image)),
        threading.Thread(target=run, args=("b", other.image)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.array_equal(results["a"], expected["a"])
    assert np.array_equal(results["b"], expected["b"])
    # and dask's global scheduler setting is left as it was
    import dask

    assert dask.config.get("scheduler", None) is None

"""Alpha-expansion over a grid max-flow whose arcs are implicit in the grid, compiled by numba.

The sites are the voxels of a window padded by one voxel on every side. A site's
neighbour along direction ``d`` is ``i + disp[d]``: no arc list is stored, only one
residual capacity per site and direction (4 bytes) and a few words of search state per
site, about 80 bytes a site with 6 neighbours and 3 labels where gco's general graph took
about 600.
The padding sites have no capacity, so the search never leaves the window and needs no
bounds checks.

The max-flow is Boykov and Kolmogorov's (2004, "An experimental comparison of
min-cut/max-flow algorithms for energy minimization in vision"): two search trees grown
from the terminals, augmentation along the path where they meet, adoption of the orphans
it leaves, with the timestamp and distance heuristics of the paper. Each expansion move
is the binary energy of Kolmogorov and Zabih (2004, "What energy functions can be
minimized via graph cuts?") with their construction of a pairwise term. A move is kept
only when it lowers the energy, so ties keep the current labels and every run is a pure
function of its inputs.

This module imports numba: :mod:`tiledseg.smoothing.energy` imports it on first use.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["expansion"]

_NONE = -1
_BIG = np.int64(1) << 60


@numba.njit(nogil=True, cache=True)
def _build_move(alpha, unary, labels, weights, disp, tr, rc):  # pragma: no cover
    """Terminal and arc capacities of the move "switch to ``alpha``" (sink side = switch).

    Returns the cut's value with every site kept (all on the source side).
    """
    n = tr.shape[0]
    n_dirs = disp.shape[0]
    for i in range(n):
        tr[i] = unary[i, alpha] - unary[i, labels[i]]
        for d in range(n_dirs):
            rc[i, d] = 0
    for m in range(weights.shape[0]):
        step = disp[2 * m]
        for i in range(n):
            w = weights[m, i]
            if w == 0:
                continue
            j = i + step
            lp = labels[i]
            lq = labels[j]
            # E(0,0), E(0,1), E(1,0); E(1,1) = 0 (both alpha)
            a = w if lp != lq else 0
            b = w if lp != alpha else 0
            c = w if lq != alpha else 0
            # E(0,0) to i kept, E(1,1) = 0 to i switched; what is left sits on the arcs
            tr[i] -= a
            b -= a
            if b < 0:
                tr[i] -= b
                tr[j] += b
                rc[j, 2 * m + 1] = b + c
            elif c < 0:
                tr[i] += c
                tr[j] -= c
                rc[i, 2 * m] = b + c
            else:
                rc[i, 2 * m] = b
                rc[j, 2 * m + 1] = c
    kept = 0
    for i in range(n):
        if tr[i] < 0:
            kept -= tr[i]
    return kept


# The max-flow's phases are helpers that numba inlines into it (``inline="always"``
# works on numba's IR: no call, and the rings' scalars stay in registers). ``side`` is 0
# for the source tree, 1 for the sink tree: one helper serves both trees where a
# written-out function had near-copies. Plain helpers (called, not inlined) measured 40%
# slower than the written-out function; inlined ones 20% slower until _max_flow was
# compiled without numba's runtime (njit's ``_nrt=False``; it allocates nothing): every
# array handed to an inlined helper took a reference count, in the hottest loops. Without
# them the helpers are as fast as the written-out function (fastest of alternating runs:
# 10.6 s against 10.9 s on a 128^3 3-class window, 2.85 s against 2.97 s on 96^3; the
# labels are the same bit for bit).
_INLINE = {"nogil": True, "cache": True, "inline": "always"}


@numba.njit(**_INLINE)
def _activate(j, queue, queued, head, count):  # pragma: no cover
    """Put ``j`` at the end of the ring of active sites unless it is in it; return the count."""
    if queued[j] == 0:
        queue[(head + count) % queue.shape[0]] = j
        queued[j] = 1
        count += 1
    return count


@numba.njit(**_INLINE)
def _make_orphan(k, parent, orphans, o_head, o_count, orphan):  # pragma: no cover
    """Cut ``k`` from its parent and queue it for adoption; return the orphans' count."""
    parent[k] = orphan
    orphans[(o_head + o_count) % orphans.shape[0]] = k
    return o_count + 1


@numba.njit(**_INLINE)
def _plant(tr, parent, sink, ts, dist, queue, queued, terminal):  # pragma: no cover
    """Start the two trees at the sites with a terminal arc, all active; return their count."""
    count = 0
    for i in range(tr.shape[0]):
        ts[i] = 0
        dist[i] = 0
        queued[i] = 0
        if tr[i] != 0:
            parent[i] = terminal
            sink[i] = 1 if tr[i] < 0 else 0
            dist[i] = 1
            count = _activate(i, queue, queued, 0, count)
        else:
            parent[i] = _NONE
            sink[i] = 0
    return count


@numba.njit(**_INLINE)
def _next_active(queue, queued, parent, head, count):  # pragma: no cover
    """Pop the next active site still in a tree (-1: none left); return it, ``head``, ``count``."""
    while count > 0:
        k = queue[head]
        head = (head + 1) % queue.shape[0]
        count -= 1
        queued[k] = 0
        if parent[k] != _NONE:
            return k, head, count
    return -1, head, count


@numba.njit(**_INLINE)
def _grow(i, rc, disp, parent, sink, ts, dist, queue, queued, head, count):  # pragma: no cover
    """Grow the tree of ``i`` into its free neighbours until it touches the other tree.

    Returns ``(s_site, t_site, middle, count)``: the arc ``middle`` from ``s_site`` in the
    source tree to ``t_site`` in the sink tree (``middle`` -1 when the trees did not meet)
    and the new count of active sites.
    """
    # one inlined copy per tree, its side a constant: the compiler drops the other tree's
    # branches from the loop, as the written-out copies had none
    if sink[i] == 0:
        return _grow_tree(i, 0, rc, disp, parent, sink, ts, dist, queue, queued, head, count)
    return _grow_tree(i, 1, rc, disp, parent, sink, ts, dist, queue, queued, head, count)


@numba.njit(**_INLINE)
def _grow_tree(
    i, side, rc, disp, parent, sink, ts, dist, queue, queued, head, count
):  # pragma: no cover
    """Grow the tree of ``i``, whose side is ``side``: :func:`_grow`'s loop."""
    for d in range(disp.shape[0]):
        j = i + disp[d]
        # the arc leaves i in the source tree and enters i in the sink tree
        if (rc[i, d] if side == 0 else rc[j, d ^ 1]) <= 0:
            continue
        if parent[j] == _NONE:
            sink[j] = side
            parent[j] = d ^ 1
            ts[j] = ts[i]
            dist[j] = dist[i] + 1
            count = _activate(j, queue, queued, head, count)
        elif sink[j] != side:
            if side == 0:
                return i, j, d, count
            return j, i, d ^ 1, count
        elif ts[j] <= ts[i] and dist[j] > dist[i]:
            parent[j] = d ^ 1
            ts[j] = ts[i]
            dist[j] = dist[i] + 1
    return -1, -1, -1, count


@numba.njit(**_INLINE)
def _path_capacity(k, side, bottleneck, tr, rc, disp, parent, terminal):  # pragma: no cover
    """Lower ``bottleneck`` to the least residual capacity from ``k`` to its tree's terminal.

    Flow runs towards the root in the source tree (``side`` 0), away from it in the sink's.
    """
    while True:
        a = parent[k]
        if a == terminal:
            return min(bottleneck, tr[k] if side == 0 else -tr[k])
        p = k + disp[a]
        bottleneck = min(bottleneck, rc[p, a ^ 1] if side == 0 else rc[k, a])
        k = p


@numba.njit(**_INLINE)
def _push_path(
    k, side, flow, tr, rc, disp, parent, orphans, o_count, terminal, orphan
):  # pragma: no cover
    """Push ``flow`` along the path from ``k`` to its tree's terminal; return the orphans' count.

    A saturated arc, or terminal arc, makes its lower end an orphan.
    """
    while True:
        a = parent[k]
        if a == terminal:
            if side == 0:
                tr[k] -= flow
            else:
                tr[k] += flow
            if tr[k] == 0:
                o_count = _make_orphan(k, parent, orphans, 0, o_count, orphan)
            return o_count
        p = k + disp[a]
        if side == 0:
            rc[p, a ^ 1] -= flow
            rc[k, a] += flow
            saturated = rc[p, a ^ 1] == 0
        else:
            rc[k, a] -= flow
            rc[p, a ^ 1] += flow
            saturated = rc[k, a] == 0
        if saturated:
            o_count = _make_orphan(k, parent, orphans, 0, o_count, orphan)
        k = p


@numba.njit(**_INLINE)
def _root_distance(j, time, ts, dist, parent, disp, terminal, orphan):  # pragma: no cover
    """Count the steps from ``j`` to its terminal, ``_BIG`` when its path meets an orphan.

    Distances found are cached on the path with timestamp ``time``.
    """
    k = j
    steps = 0
    while True:
        if ts[k] == time:
            steps += dist[k]
            break
        a = parent[k]
        steps += 1
        if a == terminal:
            ts[k] = time
            dist[k] = 1
            break
        if a == orphan:
            return _BIG
        k = k + disp[a]
    found = steps
    k = j
    while ts[k] != time:
        ts[k] = time
        dist[k] = steps
        steps -= 1
        k = k + disp[parent[k]]
    return found


@numba.njit(**_INLINE)
def _adopt(i, time, rc, disp, parent, sink, ts, dist, terminal, orphan):  # pragma: no cover
    """Give orphan ``i`` the nearest parent in its tree whose path reaches the terminal.

    Returns whether there was one.
    """
    side = sink[i]
    best = -1
    best_dist = _BIG
    for d in range(disp.shape[0]):
        j = i + disp[d]
        if parent[j] == _NONE or sink[j] != side:
            continue
        if (rc[j, d ^ 1] if side == 0 else rc[i, d]) <= 0:
            continue
        steps = _root_distance(j, time, ts, dist, parent, disp, terminal, orphan)
        if steps < best_dist:
            best = d
            best_dist = steps
    if best < 0:
        return False
    parent[i] = best
    ts[i] = time
    dist[i] = best_dist + 1
    return True


@numba.njit(**_INLINE)
def _free_orphan(
    i, rc, disp, parent, sink, queue, queued, head, count, orphans, o_head, o_count, orphan
):  # pragma: no cover
    """Free orphan ``i``; return the counts of active sites and of orphans.

    Its children become orphans, and the neighbours that could reach it become active, to
    grow into it again.
    """
    side = sink[i]
    for d in range(disp.shape[0]):
        j = i + disp[d]
        if parent[j] == _NONE or sink[j] != side:
            continue
        if (rc[j, d ^ 1] if side == 0 else rc[i, d]) > 0:
            count = _activate(j, queue, queued, head, count)
        if parent[j] == (d ^ 1):
            o_count = _make_orphan(j, parent, orphans, o_head, o_count, orphan)
    parent[i] = _NONE
    return count, o_count


@numba.njit(**_INLINE)
def _adopt_orphans(
    time, rc, disp, parent, sink, ts, dist, queue, queued, head, count, orphans, o_count
):  # pragma: no cover
    """Adopt or free every orphan, in order; return the count of active sites."""
    terminal = disp.shape[0]
    orphan = terminal + 1
    o_head = 0
    while o_count > 0:
        i = orphans[o_head]
        o_head = (o_head + 1) % orphans.shape[0]
        o_count -= 1
        if not _adopt(i, time, rc, disp, parent, sink, ts, dist, terminal, orphan):
            count, o_count = _free_orphan(
                i,
                rc,
                disp,
                parent,
                sink,
                queue,
                queued,
                head,
                count,
                orphans,
                o_head,
                o_count,
                orphan,
            )
    return count


@numba.njit(nogil=True, cache=True, _nrt=False)
def _max_flow(tr, rc, disp, parent, sink, ts, dist, queue, queued, orphans):  # pragma: no cover
    """Boykov-Kolmogorov max-flow; on return ``sink[i] and parent[i] >= 0`` marks the sink side.

    ``tr[i] > 0`` is a source arc of that capacity, ``< 0`` a sink arc; ``rc[i, d]`` the
    arc from ``i`` to ``i + disp[d]`` (its sister is ``d ^ 1``). ``parent[i]`` is the
    direction from ``i`` to its parent, ``n_dirs`` for a terminal, ``n_dirs + 1`` for an
    orphan, -1 for a free site.
    """
    terminal = disp.shape[0]
    orphan = terminal + 1
    # active sites: a ring of at most n entries (``queued`` keeps each in it once)
    head = 0
    count = _plant(tr, parent, sink, ts, dist, queue, queued, terminal)
    time = 0
    flow = 0
    current = -1
    while True:
        # the site whose growth met the other tree grows on while it is still in a tree
        if current >= 0 and parent[current] != _NONE:
            i = current
        else:
            i, head, count = _next_active(queue, queued, parent, head, count)
            if i < 0:
                break
        current = -1
        s_site, t_site, middle, count = _grow(
            i, rc, disp, parent, sink, ts, dist, queue, queued, head, count
        )
        time += 1
        if middle < 0:
            continue
        current = i
        # augment along source -> s_site -> t_site -> sink by the bottleneck
        bottleneck = _path_capacity(s_site, 0, rc[s_site, middle], tr, rc, disp, parent, terminal)
        bottleneck = _path_capacity(t_site, 1, bottleneck, tr, rc, disp, parent, terminal)
        rc[s_site, middle] -= bottleneck
        rc[t_site, middle ^ 1] += bottleneck
        o_count = _push_path(
            s_site, 0, bottleneck, tr, rc, disp, parent, orphans, 0, terminal, orphan
        )
        o_count = _push_path(
            t_site, 1, bottleneck, tr, rc, disp, parent, orphans, o_count, terminal, orphan
        )
        flow += bottleneck
        count = _adopt_orphans(
            time, rc, disp, parent, sink, ts, dist, queue, queued, head, count, orphans, o_count
        )
    return flow


@numba.njit(nogil=True, cache=True)
def _expand(unary, weights, disp, labels, iterations, tr, rc, *state):  # pragma: no cover
    """Run expansion cycles over the labels in order, each move a max-flow.

    See :func:`expansion`; ``tr``, ``rc`` and ``state`` are reused by every move.
    """
    n, k = unary.shape
    parent, sink = state[0], state[1]
    cycle = 0
    while iterations < 0 or cycle < iterations:
        moved = False
        for alpha in range(k):
            kept = _build_move(alpha, unary, labels, weights, disp, tr, rc)
            if kept == 0:
                continue  # no site gains by switching: the move is the current labels
            flow = _max_flow(tr, rc, disp, *state)
            if flow >= kept:
                continue  # switching nothing is as cheap: ties keep the labels
            for i in range(n):
                if sink[i] == 1 and parent[i] != _NONE:
                    labels[i] = alpha
            moved = True
        cycle += 1
        if not moved:
            break
    return labels


def _displacements(shape: tuple[int, ...], offsets: list[tuple[int, ...]]) -> np.ndarray:
    """Raveled steps of the directions: ``+offset`` at ``2m``, ``-offset`` at ``2m + 1``."""
    strides = np.cumprod((1, *shape[::-1]))[:-1][::-1]
    steps = [int(np.dot(offset, strides)) for offset in offsets]
    return np.asarray([v for step in steps for v in (step, -step)], dtype=np.int64)


def _workspace(n: int, n_dirs: int) -> tuple[np.ndarray, ...]:
    """Return the max-flow's search state for ``n`` sites: 23 bytes a site.

    The state is parent, sink, ts, dist, queue, queued and orphans. The timestamps are
    int64: the clock ticks once per growth step, which an int32 would outrun (and then
    wrap) on windows of 10^8 sites.
    """
    return (
        np.empty(n, dtype=np.int8),
        np.empty(n, dtype=np.uint8),
        np.empty(n, dtype=np.int64),
        np.empty(n, dtype=np.int32),
        np.empty(n, dtype=np.int32),
        np.empty(n, dtype=np.uint8),
        np.empty(n, dtype=np.int32),
    )


def expansion(
    unary: np.ndarray,
    weights: np.ndarray,
    shape: tuple[int, ...],
    offsets: list[tuple[int, ...]],
    labels: np.ndarray,
    *,
    iterations: int = 1,
) -> np.ndarray:
    """Minimise a Potts energy on a padded grid by alpha-expansion, in place of ``labels``.

    Parameters
    ----------
    unary : ndarray of int32, shape (n_sites, k)
        Cost of each label at each site of the padded grid (C order of ``shape``).
    weights : ndarray of int32, shape (len(offsets), n_sites)
        ``weights[m, i]``: the cost of giving sites ``i`` and ``i + offsets[m]`` different
        labels; 0 where there is no such pair (the padding, held sites).
    shape : tuple of int
        The padded grid (one site of padding on each side of every axis).
    offsets : list of tuple
        Half of the neighbourhood, each offset's first non-zero step positive.
    labels : ndarray of int32, shape (n_sites,)
        The starting labels; overwritten with the result and returned.
    iterations : int
        Expansion cycles over all labels; -1 runs until a cycle changes nothing.

    Returns
    -------
    ndarray of int32
        ``labels``.
    """
    n, k = unary.shape
    if n == 0 or k < 2:
        return labels
    disp = _displacements(shape, offsets)
    return _expand(
        np.ascontiguousarray(unary, dtype=np.int32),
        np.ascontiguousarray(weights, dtype=np.int32),
        disp,
        labels,
        int(iterations),
        np.empty(n, dtype=np.int32),
        np.empty((n, disp.size), dtype=np.int32),
        *_workspace(n, disp.size),
    )

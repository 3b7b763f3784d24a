"""Graph-cut smoothing of label maps, blockwise and without seams.

:mod:`~tiledseg.smoothing.energy` holds the energy and the solve of one window
(pure functions of arrays), :mod:`~tiledseg.smoothing._grid_cut` the solver (an
alpha-expansion over a grid max-flow, compiled by numba), and
:mod:`~tiledseg.smoothing.tiled` the block plan: a first pass over windows with a
margin, then seam passes over slabs centred on the block borders.
"""

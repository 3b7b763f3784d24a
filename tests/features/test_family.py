"""One object per family: built-ins and plug-ins answer the same questions.

The registry's order is the stack order; a family's object says its outputs,
names, reach and kernel; the six ilastik families draw on one tree of Gaussian
derivatives per scale, and a tree of one family gives the same bits.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from plugin_example import smoothed_and_max
from test_filters import whole

from tiledseg.features import FAMILIES, FeatureBank, filters
from tiledseg.features.backend import get_backend
from tiledseg.features.bank import ILASTIK_FAMILIES, SCALE_MEANING, relative_spacing
from tiledseg.features.families import ALIASES, BUILTINS, BY_NAME
from tiledseg.features.family import DerivativeFamily, Family
from tiledseg.features.plugins import FeaturePlugin

PLUGIN = "plugin_example:smoothed_and_max"


def test_the_registry_is_the_stack_order_and_every_family_is_a_family():
    assert tuple(f.name for f in BUILTINS) == FAMILIES
    assert len(BY_NAME) == len(BUILTINS)
    assert all(isinstance(f, Family) for f in BUILTINS)
    assert smoothed_and_max.__tiledseg_feature__.name == PLUGIN
    assert isinstance(smoothed_and_max.__tiledseg_feature__, Family)
    assert tuple(f.name for f in BUILTINS if isinstance(f, DerivativeFamily)) == ILASTIK_FAMILIES
    assert SCALE_MEANING == {f.name: f.scale for f in BUILTINS}
    assert ALIASES["HessianOfGaussianEigenvalues"] == "hessian_of_gaussian_eigenvalues"
    assert ALIASES["multiscale_gaussian"] == "gaussian_smoothing"


def test_a_bank_asks_the_family_objects():
    bank = FeatureBank({"sobel": [1.0], "gabor": [4.0], PLUGIN: [1.0]}, in_2d=["sobel"])
    assert bank.family("sobel") is BY_NAME["sobel"]
    assert isinstance(bank.family(PLUGIN), FeaturePlugin)
    assert bank.components("sobel", 3, 1.0) == 3  # in 2D: two axes and the magnitude
    assert bank.components("gabor", 3, 4.0) == 4
    assert bank.components(PLUGIN, 3, 1.0) == 2
    rel = relative_spacing((2.0, 1.0, 1.0))
    sobel = bank.family("sobel").margin(1.0, rel[1:])  # planar: y and x only
    gabor = bank.family("gabor").margin(4.0, rel)
    plugin = bank.family(PLUGIN).margin(1.0, rel)
    assert gabor[0] == 0
    assert plugin == (5, 5, 5)  # the declared halo along every axis
    yx = tuple(max(s, g, p) for s, g, p in zip(sobel, gabor[1:], plugin[1:], strict=True))
    assert bank.halo((2.0, 1.0, 1.0)) == (plugin[0], *yx)


@pytest.mark.parametrize("ndim", [2, 3])
def test_one_tree_per_scale_serves_every_derivative_family(monkeypatch, ndim):
    made = []

    class Counting(filters.ScaleTree):
        def __init__(self, image, sigma, families, *args):
            made.append((sigma, tuple(f.name for f in families)))
            super().__init__(image, sigma, families, *args)

    monkeypatch.setattr(filters, "ScaleTree", Counting)
    image = np.random.default_rng(0).random((19,) * ndim, dtype=np.float32)
    bank = FeatureBank({**{f: [1.0, 1.6] for f in ILASTIK_FAMILIES}, "sobel": [1.0]})
    whole(image, bank)
    assert made == [(1.0, ILASTIK_FAMILIES), (1.6, ILASTIK_FAMILIES)]


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)])
def test_a_tree_of_one_family_gives_the_same_bits(spacing):
    image = np.random.default_rng(1).random((15, 17, 16), dtype=np.float32) * 50
    rel = relative_spacing(spacing)
    inner = (slice(3, 11), slice(2, 15), slice(0, 16))
    bank = FeatureBank({f: [1.6] for f in FAMILIES})
    together = filters.block_features(image[None], bank=bank, inner=inner, spacing=spacing)
    offsets, _ = filters._layout(bank, 3)
    for family in BUILTINS:
        alone = family.values(image, 1.6, inner=inner, rel=rel, be=get_backend(image))
        for k, value in alone:
            assert_array_equal(value, together[offsets[family.name, 1.6] + k], strict=True)

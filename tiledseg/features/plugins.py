"""Plug-in feature families: user functions the engine tiles like its own kernels.

A plug-in is a function ``function(image, scale, *, spacing) -> features``:

- ``image`` is one channel of a block grown by the plug-in's declared reach
  (float32, spatial axes only; at the volume's edge the growth stops there);
- ``scale`` is one of the scales the bank lists for it;
- ``spacing`` is the relative voxel spacing (1 along the finest axis);
- it returns ``(n_outputs, *image.shape)``, values for every voxel it was given.

It declares ``halo`` (how far, in voxels along any axis, a value may depend on its
input: an int, or a function of the scale) and ``outputs`` (an int, or a function of
the number of spatial axes). The engine keeps the values of the block's own voxels,
so a plug-in whose value at a voxel depends only on voxels within its halo (with
its own boundary handling at the volume's edge) gives the same bits tiled and
untiled. :func:`check_plugin` tests that claim on random data.

Registering: ``@feature_plugin(halo=..., outputs=...)`` on a module-level function
makes it usable in a bank as ``"package.module:function"`` in any process (a model
file, a YAML bank, dask workers); :func:`register_feature` also gives it a short
name in the registering process. A registered plug-in travels to dask workers
inside the bank (cloudpickle), so short names work on clusters too.

A model file is data from wherever it came from: loading one imports a plug-in's
module only if it is already registered in this process or its top-level package
is listed in the ``TILEDSEG_PLUGINS`` environment variable (comma-separated), so a
crafted model file cannot make tiledseg import code. Bank files and banks given
in Python are the user's own choice and import what they name.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib
import inspect
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tiledseg.arrays import to_host
from tiledseg.errors import TiledsegError
from tiledseg.features.family import FamilyDefaults, Region, Values, grow

if TYPE_CHECKING:
    from tiledseg.features.backend import Backend

__all__ = [
    "ALLOW_VARIABLE",
    "FeaturePlugin",
    "check_plugin",
    "feature_plugin",
    "find_plugin",
    "register_feature",
    "untrusted_source",
]

_ATTRIBUTE = "__tiledseg_feature__"
_REGISTRY: dict[str, FeaturePlugin] = {}
#: ``module.path:function.name``
_IMPORTABLE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
#: Names that mean something else in a bank or in feature names.
RESERVED = ("raw", "in_2d", "extra_channels")
#: Environment variable listing the packages whose plug-ins a model file may import.
ALLOW_VARIABLE = "TILEDSEG_PLUGINS"
_TRUSTED: contextvars.ContextVar[bool] = contextvars.ContextVar("tiledseg_plugins", default=True)


@contextlib.contextmanager
def untrusted_source() -> Iterator[None]:
    """Within this block, banks import plug-in modules only where ``TILEDSEG_PLUGINS`` allows."""
    token = _TRUSTED.set(False)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _allowed(module: str) -> bool:
    if _TRUSTED.get():
        return True
    allowed = {p.strip() for p in os.environ.get(ALLOW_VARIABLE, "").split(",") if p.strip()}
    return module.split(".")[0] in allowed or module in allowed


@dataclass(frozen=True)
class FeaturePlugin(FamilyDefaults):
    """A user feature function with its declared halo and output count.

    It is a :class:`~tiledseg.features.family.Family`, as the built-in families are:
    a bank asks it the same questions.

    Parameters
    ----------
    name : str
        The name banks use for it.
    function : callable
        ``function(image, scale, *, spacing) -> (n_outputs, *image.shape)``.
    halo : int or callable
        Reach in voxels along every axis, or ``halo(scale) -> int``.
    outputs : int or callable
        Values per voxel, or ``outputs(ndim) -> int``.
    scale : str
        What its scale means, for feature names (e.g. ``"sigma"``).
    """

    name: str
    function: Callable[..., Any]
    halo: int | Callable[[float], int]
    outputs: int | Callable[[int], int]
    scale: str = "scale"

    def reach(self, scale: float) -> int:
        """Return the declared halo at ``scale``."""
        value = self.halo(scale) if callable(self.halo) else self.halo
        return _count(value, f"halo of plug-in feature {self.name!r} at scale {scale:g}", 0)

    def n_outputs(self, ndim: int) -> int:
        """Return the values per voxel in ``ndim`` spatial dimensions."""
        value = self.outputs(ndim) if callable(self.outputs) else self.outputs
        return _count(value, f"output count of plug-in feature {self.name!r}", 1)

    def margin(self, scale: float, rel: Sequence[float]) -> tuple[int, ...]:
        """Return the declared halo at ``scale`` along every axis, whatever the spacing."""
        return (self.reach(scale),) * len(rel)

    def fingerprint(self) -> str:
        """Return a digest of the function's code and declarations.

        A cached training table or an unfinished run made with other code is then
        not reused.
        """
        h = hashlib.sha256(self.name.encode())
        for part in (self.function, self.halo, self.outputs):
            h.update(_code_of(part).encode())
        h.update(self.scale.encode())
        return h.hexdigest()[:16]

    def compute(self, image: Any, scale: float, rel: Sequence[float]) -> Any:
        """Call the function and check the shape of what it returns."""
        n = self.n_outputs(image.ndim)
        try:
            values = self.function(image, scale, spacing=tuple(rel))
        except Exception as exc:  # the user's code: one line naming it, not an internal error
            raise TiledsegError(
                f"plug-in feature {self.name!r} failed at scale {scale:g} on a block of shape "
                f"{image.shape}: {type(exc).__name__}: {exc}"
            ) from exc
        shape = getattr(values, "shape", None)
        if shape != (n, *image.shape):
            raise TiledsegError(
                f"plug-in feature {self.name!r} returned shape {shape} for an image of shape "
                f"{image.shape}; it declares {n} output(s), so it must return "
                f"{(n, *image.shape)}"
            )
        return values

    def values(
        self, image: Any, scale: float, *, inner: Region, rel: Sequence[float], be: Backend
    ) -> Values:
        """Yield ``(output, values on the block)``, computed on the block grown by the halo.

        A plug-in is numpy code (docs/plugins.md): a GPU block is copied to the host for
        it, and its outputs are copied back.
        """
        grown, within = grow(inner, self.margin(scale, rel), image.shape)
        # the block is shared by every later family and scale: the plug-in gets a read-only
        # view
        view = to_host(image[grown]).view()
        view.flags.writeable = False
        values = self.compute(view, scale, rel)
        for k in range(values.shape[0]):
            yield k, be.xp.asarray(values[k][within])


def _code_of(part: Any) -> str:
    """Source of a callable (its bytecode where there is no source); repr of a value."""
    if not callable(part):
        return repr(part)
    target = getattr(part, "__func__", part)
    try:
        return inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        if code is not None:
            return code.co_code.hex() + repr(code.co_consts)
        return f"{type(part).__module__}.{type(part).__qualname__}"


def _count(value: Any, what: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise TiledsegError(f"the {what} must be an integer >= {least}, got {value!r}")
    return int(value)


def _plugin(function, *, halo, outputs, name, scale) -> FeaturePlugin:
    if not callable(function):
        raise TiledsegError(f"a plug-in feature must be a function, got {function!r}")
    if name is None:
        name = f"{function.__module__}:{function.__qualname__}"
    if not isinstance(name, str) or not name:
        raise TiledsegError(f"a plug-in feature's name must be a non-empty string, got {name!r}")
    from tiledseg.features.bank import FAMILIES, is_builtin

    if is_builtin(name) or name in RESERVED:
        raise TiledsegError(
            f"plug-in feature name {name!r} is taken by a built-in family or bank key "
            f"({', '.join((*FAMILIES, *RESERVED))})"
        )
    plugin = FeaturePlugin(name, function, halo, outputs, scale)
    if not callable(halo):
        plugin.reach(1.0)
    if not callable(outputs):
        plugin.n_outputs(2)
    return plugin


def register_feature(
    function: Callable[..., Any],
    *,
    halo: int | Callable[[float], int],
    outputs: int | Callable[[int], int],
    name: str | None = None,
    scale: str = "scale",
) -> FeaturePlugin:
    """Register ``function`` as a feature family a bank can name.

    Parameters
    ----------
    function : callable
        ``function(image, scale, *, spacing) -> (n_outputs, *image.shape)``.
    halo : int or callable
        How far (voxels, along any axis) a value depends on its input, or
        ``halo(scale) -> int``. Too small a halo makes tiled results differ from
        untiled ones; :func:`check_plugin` tests it.
    outputs : int or callable
        Values per voxel, or ``outputs(ndim) -> int``.
    name : str, optional
        The name banks use; ``"module:function"`` if omitted. The function is also
        reachable as ``"module:function"`` whatever its short name.
    scale : str
        What a scale means, shown in feature names.

    Returns
    -------
    FeaturePlugin
    """
    plugin = _plugin(function, halo=halo, outputs=outputs, name=name, scale=scale)
    _REGISTRY[plugin.name] = plugin
    canonical = f"{function.__module__}:{function.__qualname__}"
    # the module:function name keeps the declaration made under it (or the first one):
    # registering the function again under a short name does not change it
    if canonical == plugin.name or canonical not in _REGISTRY:
        _REGISTRY[canonical] = FeaturePlugin(canonical, function, halo, outputs, scale)
        try:
            setattr(function, _ATTRIBUTE, _REGISTRY[canonical])
        except (AttributeError, TypeError):  # builtins and some callables refuse attributes
            pass
    return plugin


def feature_plugin(
    *,
    halo: int | Callable[[float], int],
    outputs: int | Callable[[int], int],
    name: str | None = None,
    scale: str = "scale",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as :func:`register_feature` does; return it unchanged.

    A decorated module-level function can be named in a bank file as
    ``"package.module:function"``: importing the module declares it again in any
    process that loads the bank.
    """

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        register_feature(function, halo=halo, outputs=outputs, name=name, scale=scale)
        return function

    return decorate


def find_plugin(name: str) -> FeaturePlugin | None:
    """Return the plug-in a bank names, importing ``module:function`` names; None if unknown.

    Raises
    ------
    TiledsegError
        For a ``module:function`` name that cannot be imported or is not declared.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" not in name:
        return None
    if not _IMPORTABLE.match(name):
        raise TiledsegError(f"plug-in feature {name!r} is not a 'package.module:function' name")
    module_name, _, qualname = name.partition(":")
    if not _allowed(module_name):
        raise TiledsegError(
            f"the model names plug-in feature {name!r}; tiledseg imports a model's plug-in "
            f"code only when allowed: set {ALLOW_VARIABLE}={module_name.split('.')[0]} if you "
            "trust it (or import and register it before loading the model)"
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception as exc:  # any failure of the user's module is one line
        raise TiledsegError(
            f"plug-in feature {name!r} cannot be imported here ({type(exc).__name__}: {exc}); "
            "install its package on this machine and on the workers, or register it "
            "with tiledseg.register_feature before loading the bank"
        ) from None
    plugin = _REGISTRY.get(name) or getattr(target, _ATTRIBUTE, None)
    if not isinstance(plugin, FeaturePlugin):
        raise TiledsegError(
            f"{name!r} is not a declared feature: decorate it with "
            "@tiledseg.feature_plugin(halo=..., outputs=...) so tiledseg knows its halo"
        )
    if plugin.name != name:
        plugin = FeaturePlugin(name, plugin.function, plugin.halo, plugin.outputs, plugin.scale)
    _REGISTRY[name] = plugin
    return plugin


def check_plugin(
    plugin: str | FeaturePlugin | Callable[..., Any],
    *,
    scale: float = 1.0,
    shape: Sequence[int] = (40, 44),
    block: int | Sequence[int] = 13,
    seed: int = 0,
) -> None:
    """Check that a plug-in gives the same values tiled as untiled on random data.

    Parameters
    ----------
    plugin : name, FeaturePlugin or registered function
    scale : float
        The scale to test.
    shape : sequence of int
        Image shape (2D or 3D), grown where needed to hold at least two uneven
        blocks along each axis.
    block : int or sequence of int
        Block shape, grown to the declared halo where smaller.
    seed : int

    Raises
    ------
    TiledsegError
        Naming the first feature and block whose values differ (usually: the halo
        declared is smaller than the function's reach).
    """
    from tiledseg.features.bank import FeatureBank
    from tiledseg.features.tiled import feature_array

    if callable(plugin) and not isinstance(plugin, FeaturePlugin):
        found = getattr(plugin, _ATTRIBUTE, None)
        if found is None:
            raise TiledsegError(f"{plugin!r} is not a registered plug-in feature")
        plugin = found
    if isinstance(plugin, FeaturePlugin):
        name = plugin.name
        bank = FeatureBank({name: [scale]}, plugins={name: plugin})
    else:
        name = str(plugin)
        bank = FeatureBank({name: [scale]})
    halo = bank.halo((1.0,) * len(shape))
    sizes = (block,) * len(shape) if isinstance(block, int) else tuple(block)
    # blocks no smaller than the halo (the planner's rule), and at least two uneven ones per axis
    sizes = tuple(max(b, h, 1) for b, h in zip(sizes, halo, strict=True))
    shape = tuple(max(n, 2 * b + 3) for n, b in zip(shape, sizes, strict=True))
    image = np.random.default_rng(seed).random(shape, dtype=np.float32)
    untiled = np.asarray(feature_array(image, features=bank, block=shape))
    tiled = np.asarray(feature_array(image, features=bank, block=sizes))
    if not np.array_equal(untiled, tiled):
        where = np.argwhere(untiled != tiled)[0]
        raise TiledsegError(
            f"plug-in feature {name!r} at scale {scale:g} differs tiled and untiled (output "
            f"{where[0]}, voxel {tuple(int(v) for v in where[1:])}): the function reads "
            f"farther than its declared halo {halo[0]}, or its values depend on the shape "
            "of the array it is given"
        )

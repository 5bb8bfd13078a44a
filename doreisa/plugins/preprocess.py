"""Preprocessing operators: chunk-local functions a rank applies to its block before the copy.

An operator maps the selected part of a block to the array that is copied. It must be a
function of the block alone (no communication), and its output shape must depend only on the
input shape, so that every rank can plan the global chunk grid without asking.

Built-ins:

- ``downsample`` (``factor``): keep every ``factor``-th element along each dimension.
- ``cast`` (``dtype``): convert, e.g. float64 -> float32 halves the copy.
- ``stats``: reduce the block to ``[min, max, sum, count]`` (float64). The analytics see an
  array of shape ``grid + (4,)``: one row of statistics per block. A block of any size then
  costs a 32-byte copy ("compute an integral without copying the data").
- ``module:function``: your own function of a numpy block, returning an array of the same
  shape (e.g. a unit conversion); ``params.dtype`` names its output dtype if it changes. It
  is imported in the simulation only.

On a block in GPU memory (``Bridge.publish`` of a CuPy array) the operators receive the
device array: the built-ins reduce or convert it on the device, so only their result is
copied to the host; a user function receives it too (``cupy.get_array_module`` tells).

Register your own with :func:`register_preprocessor`: a class (or function) whose keyword
parameters are the operator's ``params`` and that returns a :class:`Preprocessor`. The
contract checks names and parameters against this one registry when it loads; the rank
builds the same operator with :func:`make_preprocessor`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from doreisa.errors import BlockMismatchError, ContractError, DoreisaError
from doreisa.plugins.registry import PluginRegistry

Chunks = tuple[tuple[int, ...], ...]
Shape = tuple[int, ...]
F = TypeVar("F", bound=Callable[..., Any])


class Preprocessor(Protocol):
    """A chunk-local operator bound to its parameters.

    ``shape_of``, ``dtype_of`` and ``chunks_of`` plan what ``apply`` produces, before any
    block exists: every rank plans the same chunk grid from them.
    """

    def shape_of(self, shape: Shape, /) -> Shape: ...
    def dtype_of(self, dtype: np.dtype[Any], /) -> np.dtype[Any]: ...
    def chunks_of(self, chunks: Chunks, /) -> Chunks: ...
    def apply(self, block: np.ndarray[Any, Any], /) -> np.ndarray[Any, Any]: ...


class ParamError(DoreisaError, ValueError):
    """What is wrong with an operator as a contract gives it, and where: ``loc`` is the key path
    below the ``preprocess`` entry (``("params", "factor")``, ``("params",)`` for the set of them)."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        super().__init__(f"{'.'.join(loc)}: {message}")
        self.loc = loc
        self.message = message


@dataclass(frozen=True)
class OperatorEntry:
    """A registered operator: what builds it, and the parameters it takes."""

    factory: Callable[..., Preprocessor]
    params: tuple[str, ...]
    required: frozenset[str]

    def __repr__(self) -> str:
        return f"{getattr(self.factory, '__module__', '?')}.{getattr(self.factory, '__qualname__', self.factory)}"


PREPROCESSORS: PluginRegistry[OperatorEntry] = PluginRegistry("preprocess")


def register_preprocessor(name: str) -> Callable[[F], F]:
    """Register an operator under ``name``; returns it unchanged.

    Its keyword parameters are the ``params`` a contract gives it; it raises :class:`ParamError`
    for a bad value. ``*args`` and ``**kwargs`` are refused: the contract must know every
    parameter to check it.

    Raises
    ------
    DoreisaError
        For a duplicate name, or a signature with ``*args``/``**kwargs``.
    """

    def decorator(factory: F) -> F:
        signature = inspect.signature(factory)
        variadic = [p.name for p in signature.parameters.values() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if variadic:
            raise DoreisaError(
                f"preprocess {name!r}: {factory.__qualname__} takes *{variadic[0]}; name each parameter instead"
            )
        params = tuple(signature.parameters)
        required = frozenset(p.name for p in signature.parameters.values() if p.default is p.empty)
        PREPROCESSORS.add(name, OperatorEntry(factory, params, required))
        return factory

    return decorator


def check_preprocess(function: str, params: Mapping[str, Any]) -> None:
    """Check an operator's name and parameters as the contract gives them; imports nothing.

    Raises
    ------
    ParamError
        For parameters the operator does not take, lacks, or refuses.
    KeyError
        For an operator that is not registered.
    """
    if ":" in function:
        UserFunction.check(function, params)
        return
    _build(function, params)


def make_preprocessor(function: str, params: Mapping[str, Any]) -> Preprocessor:
    """The operator ``function`` bound to ``params``, ready to apply (in the rank).

    Raises
    ------
    ContractError
        For an operator not registered in this process, one that cannot be imported, or bad parameters.
    """
    try:
        if ":" in function:
            return UserFunction.load(function, params)
        return _build(function, params)
    except ParamError as exc:
        raise ContractError(f"preprocess {function}: {exc}") from None
    except KeyError:
        raise ContractError(
            f"preprocess {function!r} is not registered in this process (registered: {', '.join(PREPROCESSORS)}); "
            "import the module that registers it before the Bridge is created, or write 'module:function'"
        ) from None


def _build(function: str, params: Mapping[str, Any]) -> Preprocessor:
    entry = PREPROCESSORS.get(function)
    if set(params) - set(entry.params) or entry.required - set(params):
        raise ParamError(
            ("params",), f"preprocess {function} takes params {list(entry.params) or 'none'}; got {sorted(params)}"
        )
    return entry.factory(**params)


def _per_dim(shape_of: Callable[[Shape], Shape], chunks: Chunks) -> Chunks:
    # each chunk is mapped on its own, so the grid keeps its cuts
    return tuple(tuple(shape_of((n,))[0] for n in dim) for dim in chunks)


def _dtype_param(value: Any) -> np.dtype[Any]:
    try:
        return np.dtype(str(value))
    except TypeError:
        raise ParamError(("params", "dtype"), f"must be a numpy dtype name; got {value!r}") from None


@register_preprocessor("downsample")
class Downsample:
    """Keep every ``factor``-th element along each dimension."""

    def __init__(self, *, factor: int) -> None:
        if type(factor) is not int or factor < 1:
            raise ParamError(("params", "factor"), f"must be a positive integer, got {factor!r}")
        self.factor = factor

    def shape_of(self, shape: Shape, /) -> Shape:
        return tuple(-(-n // self.factor) for n in shape)

    def dtype_of(self, dtype: np.dtype[Any], /) -> np.dtype[Any]:
        return dtype

    def chunks_of(self, chunks: Chunks, /) -> Chunks:
        return _per_dim(self.shape_of, chunks)

    def apply(self, block: np.ndarray[Any, Any], /) -> np.ndarray[Any, Any]:
        return block[(slice(None, None, self.factor),) * block.ndim]


@register_preprocessor("cast")
class Cast:
    """Convert to ``dtype``."""

    def __init__(self, *, dtype: str) -> None:
        self.target = _dtype_param(dtype)

    def shape_of(self, shape: Shape, /) -> Shape:
        return shape

    def dtype_of(self, dtype: np.dtype[Any], /) -> np.dtype[Any]:
        return self.target

    def chunks_of(self, chunks: Chunks, /) -> Chunks:
        return chunks

    def apply(self, block: np.ndarray[Any, Any], /) -> np.ndarray[Any, Any]:
        return block.astype(self.target)


@register_preprocessor("stats")
class Stats:
    """``[min, max, sum, count]`` of the block (float64), one row per block."""

    def shape_of(self, shape: Shape, /) -> Shape:
        return (1,) * len(shape) + (4,)

    def dtype_of(self, dtype: np.dtype[Any], /) -> np.dtype[Any]:
        return np.dtype(np.float64)

    def chunks_of(self, chunks: Chunks, /) -> Chunks:
        return (*tuple((1,) * len(dim) for dim in chunks), (4,))

    def apply(self, block: np.ndarray[Any, Any], /) -> np.ndarray[Any, Any]:
        # float(): on a device block (CuPy) the reductions run on the device and only the three values leave it
        out = np.empty((1,) * block.ndim + (4,))
        out.reshape(4)[:] = (float(block.min()), float(block.max()), float(block.sum(dtype=np.float64)), block.size)
        return out


class UserFunction:
    """``module:function``: a function of a block that keeps its shape, imported in the simulation."""

    def __init__(self, reference: str, fn: Callable[[Any], Any], dtype: np.dtype[Any] | None) -> None:
        self.reference, self._fn, self.target = reference, fn, dtype

    @staticmethod
    def check(reference: str, params: Mapping[str, Any]) -> np.dtype[Any] | None:
        """Check the reference and parameters without importing anything; the declared output dtype."""
        module, _, attr = reference.partition(":")
        if not (module and attr.isidentifier()):
            raise ParamError(("function",), f"{reference!r} is not 'module:function'")
        if set(params) - {"dtype"}:
            raise ParamError(("params",), f"a user preprocess takes only params.dtype; got {sorted(params)}")
        return _dtype_param(params["dtype"]) if "dtype" in params else None

    @classmethod
    def load(cls, reference: str, params: Mapping[str, Any]) -> UserFunction:
        """Import the function (in the simulation)."""
        dtype = cls.check(reference, params)
        module_name, _, attr = reference.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ContractError(f"preprocess {reference!r} cannot be imported in the simulation: {exc}") from exc
        return cls(reference, fn, dtype)

    def shape_of(self, shape: Shape, /) -> Shape:
        return shape

    def dtype_of(self, dtype: np.dtype[Any], /) -> np.dtype[Any]:
        return self.target or dtype

    def chunks_of(self, chunks: Chunks, /) -> Chunks:
        return chunks

    def apply(self, block: np.ndarray[Any, Any], /) -> np.ndarray[Any, Any]:
        out = self._fn(block)
        if not hasattr(out, "__cuda_array_interface__"):  # a device block's result stays on the device
            out = np.asarray(out)
        if tuple(out.shape) != block.shape:
            raise BlockMismatchError(
                f"preprocess {self.reference!r} returned shape {out.shape} for a block of shape {block.shape}; "
                "user preprocess functions must keep the shape (use the built-ins to reduce it)"
            )
        return out

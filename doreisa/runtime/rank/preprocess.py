"""Chunk-local preprocessing, run in the simulation process before the copy.

A preprocess maps the selected part of a block to the array that is copied. It must be a
function of the block alone (no communication), and its output shape must depend only on
the input shape, so that every rank can plan the global chunk grid without asking.

Built-ins:

- ``downsample`` (``factor``): keep every ``factor``-th element along each dimension.
- ``cast`` (``dtype``): convert, e.g. float64 -> float32 halves the copy.
- ``stats``: reduce the block to ``[min, max, sum, count]`` (float64). The analytics see an
  array of shape ``grid + (4,)``: one row of statistics per block. A block of any size then
  costs a 32-byte copy ("compute an integral without copying the data").
- ``module:function``: your own function of a numpy block, returning an array of the same
  shape (e.g. a unit conversion); ``params.dtype`` names its output dtype if it changes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from doreisa.contract import Preprocess
from doreisa.errors import BlockMismatchError, ContractError

Chunks = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Preprocessor:
    """A preprocess bound to its parameters: output shape, chunk grid and dtype, and the function."""

    name: str
    shape_of: Callable[[tuple[int, ...]], tuple[int, ...]]
    dtype_of: Callable[[np.dtype[Any]], np.dtype[Any]]
    apply: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]
    chunks_of: Callable[[Chunks], Chunks]


def _per_dim(shape_of: Callable[[tuple[int, ...]], tuple[int, ...]]) -> Callable[[Chunks], Chunks]:
    # each chunk is mapped on its own, so the grid keeps its cuts
    return lambda chunks: tuple(tuple(shape_of((n,))[0] for n in dim) for dim in chunks)


def _downsample(params: Mapping[str, Any]) -> Preprocessor:
    factor = params.get("factor")
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ContractError(f"preprocess downsample needs params.factor, a positive integer; got {factor!r}")

    def shape_of(shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(-(-n // factor) for n in shape)

    return Preprocessor(
        "downsample",
        shape_of,
        lambda dtype: dtype,
        lambda block: block[(slice(None, None, factor),) * block.ndim],
        _per_dim(shape_of),
    )


def _cast(params: Mapping[str, Any]) -> Preprocessor:
    try:
        target = np.dtype(str(params.get("dtype")))
    except TypeError as exc:
        raise ContractError(
            f"preprocess cast needs params.dtype, a numpy dtype name; got {params.get('dtype')!r}"
        ) from exc
    return Preprocessor(
        "cast", lambda shape: shape, lambda dtype: target, lambda block: block.astype(target), lambda chunks: chunks
    )


def _block_stats(block: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out = np.empty((1,) * block.ndim + (4,))
    flat = out.reshape(4)
    flat[:] = (block.min(), block.max(), block.sum(dtype=np.float64), block.size)
    return out


def _stats(params: Mapping[str, Any]) -> Preprocessor:
    if params:
        raise ContractError(f"preprocess stats takes no params; got {sorted(params)}")
    return Preprocessor(
        "stats",
        lambda shape: (1,) * len(shape) + (4,),
        lambda dtype: np.dtype(np.float64),
        _block_stats,
        lambda chunks: (*tuple((1,) * len(dim) for dim in chunks), (4,)),
    )


def _user(reference: str, params: Mapping[str, Any]) -> Preprocessor:
    module_name, _, attr = reference.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ContractError(f"preprocess {reference!r} cannot be imported in the simulation: {exc}") from exc
    target = np.dtype(str(params["dtype"])) if "dtype" in params else None

    def apply(block: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        out = np.asarray(fn(block))
        if out.shape != block.shape:
            raise BlockMismatchError(
                f"preprocess {reference!r} returned shape {out.shape} for a block of shape {block.shape}; "
                "user preprocess functions must keep the shape (use the built-ins to reduce it)"
            )
        return out

    return Preprocessor(reference, lambda shape: shape, lambda dtype: target or dtype, apply, lambda chunks: chunks)


BUILTINS: dict[str, Callable[[Mapping[str, Any]], Preprocessor]] = {
    "downsample": _downsample,
    "cast": _cast,
    "stats": _stats,
}


def make_preprocessor(spec: Preprocess | None) -> Preprocessor | None:
    """Resolve the contract's ``preprocess`` (``None`` when there is none).

    Raises
    ------
    ContractError
        For an unknown function or bad parameters.
    """
    if spec is None:
        return None
    if spec.function in BUILTINS:
        return BUILTINS[spec.function](spec.params)
    if ":" in spec.function:
        return _user(spec.function, spec.params)
    raise ContractError(
        f"preprocess {spec.function!r} is not a built-in; built-ins: {sorted(BUILTINS)}, or write 'module:function'"
    )

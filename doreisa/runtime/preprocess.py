"""Chunk-local preprocessing, run in the simulation process before the copy.

A preprocess maps the selected part of a block to the array that is copied. It must be a
function of the block alone (no communication), and its output shape must depend only on
the input shape, so that every rank can plan the global chunk grid without asking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from doreisa.contract import Preprocess
from doreisa.errors import ContractError


@dataclass(frozen=True)
class Preprocessor:
    """A preprocess bound to its parameters: output shape and dtype, and the function."""

    name: str
    shape_of: Callable[[tuple[int, ...]], tuple[int, ...]]
    dtype_of: Callable[[np.dtype[Any]], np.dtype[Any]]
    apply: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]


def _downsample(params: Mapping[str, Any]) -> Preprocessor:
    factor = params.get("factor")
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ContractError(f"preprocess downsample needs params.factor, a positive integer; got {factor!r}")
    return Preprocessor(
        "downsample",
        lambda shape: tuple(-(-n // factor) for n in shape),
        lambda dtype: dtype,
        lambda block: block[(slice(None, None, factor),) * block.ndim],
    )


def _cast(params: Mapping[str, Any]) -> Preprocessor:
    try:
        target = np.dtype(str(params.get("dtype")))
    except TypeError as exc:
        raise ContractError(
            f"preprocess cast needs params.dtype, a numpy dtype name; got {params.get('dtype')!r}"
        ) from exc
    return Preprocessor("cast", lambda shape: shape, lambda dtype: target, lambda block: block.astype(target))


BUILTINS: dict[str, Callable[[Mapping[str, Any]], Preprocessor]] = {"downsample": _downsample, "cast": _cast}


def make_preprocessor(spec: Preprocess | None) -> Preprocessor | None:
    """Resolve the contract's ``preprocess`` (``None`` when there is none).

    Raises
    ------
    ContractError
        For an unknown function or bad parameters.
    """
    if spec is None:
        return None
    if spec.function not in BUILTINS:
        raise ContractError(f"preprocess {spec.function!r} is not a built-in; built-ins: {sorted(BUILTINS)}")
    return BUILTINS[spec.function](spec.params)

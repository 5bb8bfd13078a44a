"""Parts of a graph run on a GPU (``placement: {device: gpu}``): their blocks as CuPy arrays, their results on the host.

A part placed on a GPU worker (``num_gpus=1``) gets its blocks from Ray's object store as
numpy arrays: :func:`to_device` makes each a device array before the part's tasks run, and
Dask's chunk functions, called with CuPy arrays, dispatch to CuPy (NEP 18). What the part
returns, to other parts or to the driver, is brought back to the host by :func:`to_host`:
Ray stores host arrays, and the analytics' results stay numpy whatever ran them.

CuPy is imported only here, and only in a GPU part.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from doreisa.errors import AnalyticsError


def array_module() -> Any:
    """CuPy, in a GPU part.

    Raises
    ------
    AnalyticsError
        When the worker cannot import CuPy, naming the extra that installs it.
    """
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:
        raise AnalyticsError(
            f"an analytic placed on a GPU (placement.device: gpu) runs on a Ray worker that cannot import CuPy "
            f"({exc}); install it on every node: pip install 'doreisa[gpu]'"
        ) from exc


def to_device(value: Any, xp: Any) -> Any:
    """A block (numpy array), or a list of blocks stored together, as device arrays of ``xp``; anything else as is."""
    if isinstance(value, np.ndarray):
        return xp.asarray(value)
    if isinstance(value, list | tuple) and value and all(isinstance(v, np.ndarray) for v in value):
        return type(value)(xp.asarray(v) for v in value)
    return value


def to_host(value: Any, xp: Any) -> Any:
    """``value`` with every device array of ``xp`` in it (in tuples, lists, dicts) copied to the host."""
    if isinstance(value, xp.ndarray):
        return xp.asnumpy(value)
    if isinstance(value, list | tuple):
        return type(value)(to_host(v, xp) for v in value)
    if isinstance(value, dict):
        return {k: to_host(v, xp) for k, v in value.items()}
    return value

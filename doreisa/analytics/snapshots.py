"""``save``: snapshots of an array written to Zarr where its blocks live, never through the driver.

Each analysed step becomes one index along ``step`` of the variable ``LABEL`` in the store
``OUTPUT/snapshots/LABEL.zarr`` (``xarray.open_zarr`` opens it, with ``time``). The
analytics process only grows the store's metadata (shape, ``step`` and ``time``); every chunk
is written by the Dask task that holds its block, which the scheduler runs next to the block
(in a Ray task on the block's node), and the result that reaches the driver is the number of
bytes written. With a trigger (``analytics[].when``) this gives event-driven snapshots: full
fields only around the interesting steps.

On a cluster, ``OUTPUT`` (or ``path``) must be a file system every node sees (the parallel file
system of an HPC site): each node writes its own chunks into it.

zarr is imported when a store is written (``pip install "doreisa[zarr]"``).
"""

# dask.array and zarr have no type annotations: their members are unknown to pyright's strict mode.
# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false, reportUnknownArgumentType=false

from __future__ import annotations

import math
import threading
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from doreisa.analytics.registry import default_registry
from doreisa.errors import AnalyticsError
from doreisa.plugins.stores import store_name

_LOCKS: dict[Path, threading.Lock] = {}  # one store grows one step at a time, whatever calls overlap
_LOCKS_GUARD = threading.Lock()


@default_registry.analytic("save", named="auto")  # an array with dims arrives as a DataArray: its dims name the store's
def save(
    x: Any,
    *,
    step: int,
    time: float | None,
    label: str,
    output: Path | None,
    path: str | None = None,
    dims: list[str] | None = None,
) -> Any:
    """Write the array (its selected region) of this step into a Zarr store, chunk by chunk where each block is.

    ``path``: the store (relative to the output folder; default ``snapshots/LABEL.zarr``).
    ``dims``: names of the array's dimensions (default: the contract's ``dims`` of the array,
    else ``dim_0``, ``dim_1``...). Returns the number of bytes written.

    Raises
    ------
    AnalyticsError
        Without an output folder for a relative ``path``, or when zarr is missing.
    """
    array: da.Array = x.data if hasattr(x, "dims") else x
    names = tuple(dims) if dims is not None else tuple(map(str, getattr(x, "dims", ()))) or None
    names = names or tuple(f"dim_{i}" for i in range(array.ndim))
    if len(names) != array.ndim:
        raise AnalyticsError(f"save: dims {list(names)} name {len(names)} dimensions; the array has {array.ndim}")
    store = _store_path(path, label, output)
    target = _grow(store, label, array, names, step, time)
    written = array.map_blocks(_write_block, target, dtype=np.int64, chunks=(1,) * array.ndim)
    return written.sum()


def _store_path(path: str | None, label: str, output: Path | None) -> Path:
    where = Path(path) if path is not None else Path("snapshots") / f"{label}.zarr"
    if where.is_absolute():
        return where
    if output is None:
        raise AnalyticsError(
            f"save: no output folder to write {where} in (doreisa run --output, or outputs.directory); "
            "or give an absolute params.path"
        )
    return output / where


def _grow(store: Path, label: str, array: da.Array, dims: tuple[str, ...], step: int, time: float | None) -> Any:
    """The store's data array, one step longer, with this step's ``step`` and ``time``; returns
    ``(zarr array, index)`` for the chunk writers."""
    try:
        import zarr
    except ImportError:
        raise AnalyticsError("save needs the zarr package: pip install 'doreisa[zarr]'") from None
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(store, threading.Lock())
    with lock, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        group: Any = zarr.open_group(store, mode="a", zarr_format=3, use_consolidated=False)  # its own shapes
        name = store_name(label)
        if name not in group:
            _create(group, name, label, array, dims)
        data, steps, times = (group[key] for key in (name, "step", "time"))
        if tuple(data.shape[1:]) != array.shape:
            raise AnalyticsError(
                f"save: {store} holds arrays of shape {tuple(data.shape[1:])}; this step's is {array.shape}"
            )
        index = data.shape[0]
        data.resize((index + 1, *array.shape))
        for coordinate, value in ((steps, step), (times, np.nan if time is None else time)):
            coordinate.resize((index + 1,))
            coordinate[index] = value
        zarr.consolidate_metadata(store, zarr_format=3)  # xarray opens it in one read, without a warning
    return data, index


def _create(group: Any, name: str, label: str, array: da.Array, dims: tuple[str, ...]) -> None:
    chunks = (1, *(_chunk(c) for c in array.chunks))
    group.create_array(
        name, shape=(0, *array.shape), chunks=chunks, dtype=array.dtype, dimension_names=("step", *dims),
        fill_value=_missing(array.dtype), attributes={"analytic": label, "coordinates": "time"},
    )  # fmt: skip
    group.create_array("step", shape=(0,), chunks=(4096,), dtype="int64", dimension_names=("step",))
    group.create_array("time", shape=(0,), chunks=(4096,), dtype="float64", dimension_names=("step",))


def _chunk(sizes: tuple[int, ...]) -> int:
    """A Zarr chunk length along one dimension such that every block covers whole chunks: two
    tasks never write one chunk. The blocks' own length when they are regular (all equal but
    the last, which may be shorter), else their greatest common divisor."""
    if all(s == sizes[0] for s in sizes[:-1]) and sizes[-1] <= sizes[0]:
        return sizes[0]
    return math.gcd(*sizes)


def _missing(dtype: np.dtype[Any]) -> Any:
    """The fill value of a step that was grown but whose chunks were not written (a failed call)."""
    return np.nan if dtype.kind in "fc" else 0


def _write_block(block: np.ndarray[Any, Any], target: Any, block_info: dict[Any, Any] | None = None) -> Any:
    """Write one block at its place (runs where the block is); its byte count, as a 1-element block."""
    data, index = target
    assert block_info is not None, "dask passes where the block is"
    where = tuple(slice(lo, hi) for lo, hi in block_info[0]["array-location"])
    data[(index, *where)] = block
    return np.full((1,) * block.ndim, block.nbytes, dtype=np.int64)

"""Stores that xarray opens as one dataset per analytic: ``zarr`` and ``netcdf``.

Each analytic (and monitor) gets one store, ``zarr/LABEL.zarr`` or ``netcdf/LABEL.nc``, holding
one variable with a ``step`` dimension first, a ``time`` coordinate along it, and after it the
result's own dimensions, coordinates and attributes (an ``xarray.DataArray`` result keeps them;
a numpy result gets ``dim_0``, ``dim_1``...). Scalars make a time series of dimension ``step``.

Results are buffered and appended in batches (every ``BATCH`` steps of one analytic, or when
``FLUSH_SECONDS`` have passed, and at the end of the run): one append costs tens of milliseconds
whatever its size. After each batch the store is complete and readable, so a run that is killed
loses at most the results of the last ``FLUSH_SECONDS``.

Only the standard library and numpy are imported here; xarray, zarr and h5netcdf when a store
is written, so that the contract (and the simulation's ranks) can load without them.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from doreisa.errors import OutputError
from doreisa.plugins.sinks import Result, register_sink

#: Results of one analytic appended together at most (the store's chunk along ``step`` for small values).
BATCH = 256
#: Seconds after which buffered results are appended, however few (a killed run loses at most these).
FLUSH_SECONDS = 5.0
#: Target size of one chunk of a store, in bytes: small results are chunked over many steps.
CHUNK_BYTES = 1 << 20
#: Our coordinates; a result with a dimension of one of these names cannot be stored.
RESERVED = ("step", "time")


def store_name(label: str) -> str:
    """A file and variable name for an analytic's label (``monitor:max(t)`` -> ``monitor_max_t``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "result"


def as_data_array(label: str, value: Any) -> Any:
    """``value`` as an ``xarray.DataArray``: its own if it is one, else numpy's with ``dim_N`` dimensions.

    Raises
    ------
    OutputError
        For a value that is not numeric (a string, an object array) or uses a reserved dimension name.
    """
    import xarray as xr

    array = value if isinstance(value, xr.DataArray) else xr.DataArray(np.asarray(value))
    if array.dtype.kind not in "biufc":
        raise OutputError(f"result of {label!r} is of type {array.dtype}; only numbers can be stored")
    clash = [d for d in array.dims if d in RESERVED]
    if clash:
        raise OutputError(f"result of {label!r} has the dimension {clash[0]!r}, which the store uses; rename it")
    return array.drop_vars([c for c in array.coords if c in RESERVED])


@dataclass
class _Series:
    """One analytic's store: what its first result looked like, and the results not yet written."""

    label: str
    name: str
    path: Path
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    written: int = 0
    pending: list[tuple[int, float, Any]] = field(default_factory=list[tuple[int, float, Any]])

    def batch(self) -> Any:
        """The pending results as one ``xarray.Dataset`` along ``step``."""
        import xarray as xr

        steps = [s for s, _, _ in self.pending]
        first = self.pending[0][2]
        data = np.stack([np.asarray(v.values) for _, _, v in self.pending])
        coords: dict[str, Any] = {k: c for k, c in first.coords.items()}
        coords |= {"step": steps, "time": ("step", [t for _, t, _ in self.pending])}
        array = xr.DataArray(
            data, dims=("step", *self.dims), coords=coords, attrs={**first.attrs, "analytic": self.label}
        )
        return array.to_dataset(name=self.name)

    def chunks(self, itemsize: int) -> tuple[int, ...]:
        """One chunk per step for large results, many steps per chunk for small ones."""
        per_step = max(1, int(np.prod(self.shape, dtype=np.int64)) * itemsize)
        return (max(1, min(BATCH, CHUNK_BYTES // per_step)), *self.shape)


class _SteppedStore:
    """One store per analytic with a ``step`` dimension, appended in batches; ``_write`` is the format's."""

    folder = ""
    suffix = ""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._series: dict[str, _Series] = {}
        self._names: set[str] = set()
        self._flushed = time.monotonic()

    def record(self, result: Result, /) -> str | None:
        array = as_data_array(result.analytic, result.value)
        series = self._series.get(result.analytic) or self._open(result.analytic, array)
        if (array.dims, array.shape) != (series.dims, series.shape):
            raise OutputError(
                f"{self.folder}: result of {result.analytic!r} at step {result.step} has dims {array.dims} and shape "
                f"{array.shape}; its store holds {series.dims} {series.shape} (a store keeps one shape for a run)"
            )
        series.pending.append((result.step, np.nan if result.time is None else result.time, array))
        if len(series.pending) >= BATCH or time.monotonic() - self._flushed >= FLUSH_SECONDS:
            self.flush()
        return str(series.path.relative_to(self.directory))

    def _open(self, label: str, array: Any) -> _Series:
        name = store_name(label)
        while name in self._names:  # two labels that read alike
            name += "_"
        self._names.add(name)
        folder = self.directory / self.folder
        folder.mkdir(parents=True, exist_ok=True)
        series = _Series(label, name, folder / f"{name}{self.suffix}", tuple(map(str, array.dims)), array.shape)
        self._series[label] = series
        return series

    def flush(self) -> None:
        """Append every buffered result; one analytic that fails does not keep the others unwritten.

        Raises
        ------
        OutputError
            Naming the analytics whose results could not be written, and how many were lost.
        """
        self._flushed = time.monotonic()
        errors, lost = [], 0
        for series in self._series.values():
            if not series.pending:
                continue
            try:
                self._write(series, series.batch())
                series.written += len(series.pending)
            except Exception as exc:
                errors.append(f"{series.label!r} (steps {series.pending[0][0]}-{series.pending[-1][0]}): {exc}")
                lost += len(series.pending)
            series.pending.clear()
        if errors:
            raise OutputError(f"{self.folder}: could not write {'; '.join(errors)}", lost=lost)

    def _write(self, series: _Series, batch: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.flush()


@register_sink("zarr", requires=("zarr", "xarray"), extra="zarr")
class ZarrSink(_SteppedStore):
    """``zarr/LABEL.zarr``: ``xarray.open_zarr`` opens each as one dataset (Zarr format 3).

    With consolidated metadata (rewritten after each batch), so that opening is one read and
    xarray does not warn; zarr warns that this is not yet in the format 3 specification, which
    is silenced here: a reader that ignores it reads the store's own metadata instead.
    """

    folder, suffix = "zarr", ".zarr"

    def _write(self, series: _Series, batch: Any) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            if series.written == 0:
                chunks = series.chunks(batch[series.name].dtype.itemsize)
                encoding = {
                    series.name: {"chunks": chunks},
                    "step": {"chunks": chunks[:1]},
                    "time": {"chunks": chunks[:1]},
                }
                batch.to_zarr(series.path, mode="w", encoding=encoding, consolidated=True, zarr_format=3)
            else:
                batch.to_zarr(series.path, append_dim="step", consolidated=True)


@register_sink("netcdf", requires=("h5netcdf", "xarray"), extra="netcdf")
class NetcdfSink(_SteppedStore):
    """``netcdf/LABEL.nc`` (NetCDF-4, written with h5netcdf): ``xarray.open_dataset`` opens each one;
    ``step`` is an unlimited dimension, grown by each batch."""

    folder, suffix = "netcdf", ".nc"

    def _write(self, series: _Series, batch: Any) -> None:
        if series.written == 0:
            encoding = {series.name: {"chunksizes": series.chunks(batch[series.name].dtype.itemsize)}}
            batch.to_netcdf(series.path, engine="h5netcdf", unlimited_dims=["step"], encoding=encoding)
            return
        import h5netcdf

        with h5netcdf.File(series.path, "a") as f:
            start = f.dimensions["step"].size
            f.resize_dimension("step", start + batch.sizes["step"])
            for name, variable in batch.variables.items():
                if "step" in variable.dims:
                    f.variables[name][start:] = variable.values

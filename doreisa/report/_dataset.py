"""A run's results as one ``xarray.Dataset`` along ``step``: :func:`open_run`.

Scalars come from the results table; arrays from the stores the table names (``zarr``, then
``netcdf``, then the ``npy`` files), opened lazily. A run that wrote no table is read from its
stores alone. xarray, pandas and dask are imported when a run is opened, never on import.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from doreisa.plugins.stores import store_name
from doreisa.report._folder import RunFolder, read_run
from doreisa.report._table import label_kinds, read_table, stored_paths

#: The store formats, best first: what the file suffix is, the module that reads it, how to open one.
STORES = ((".zarr", "zarr", "zarr"), (".nc", "h5netcdf", "netcdf"))


def open_run(directory: str | os.PathLike[str]) -> Any:
    """The results of the run in ``directory`` as one ``xarray.Dataset``, for notebooks.

    *Experimental*: the layout of the dataset may change while doreisa is at 0.x.

    One data variable per analytic (and monitor, named like ``monitor:max(temperature)``),
    along the dimension ``step`` (every step of the run that has a result), NaN where that
    analytic has no result at a step; a ``time`` coordinate along ``step`` when the simulation
    gave times. A scalar analytic is read from ``results.parquet`` (else ``results.csv``); an
    array-valued one from its ``zarr`` or ``netcdf`` store (keeping its dims and coordinates)
    or its ``npy`` files (``dim_0``, ``dim_1``...; all of one shape), lazily, with dask. Dims
    of two analytics that share a name but not a size get the analytic's name in front; an
    analytic named ``step`` or ``time`` is renamed ``step_`` or ``time_``.

    ``attrs`` holds the run's ``summary.json`` (``ok``, ``error``, ``wall_s``, ... : None when
    the run was killed before writing it), ``directory`` (the run folder) and ``not_loaded``
    (the analytics it could not load: arrays that no store kept, texts). Close the dataset (or
    use it in a ``with`` block) to close the stores it opened.

    Parameters
    ----------
    directory : str or path
        The folder ``doreisa run --output`` wrote.

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    DoreisaError
        For a folder that is not a run folder, or whose ``summary.json`` or results table is
        not one that doreisa writes.

    Examples
    --------
    >>> run = doreisa.open_run("out/heat")  # doctest: +SKIP
    >>> run["mean_T"].plot()  # doctest: +SKIP
    >>> run["T_histogram"].sel(step=100)  # doctest: +SKIP
    """
    return load(read_run(directory), npy=True).dataset


@dataclass
class Loaded:
    """A run's dataset, the steps each analytic has a result at (before they share one ``step``), and notes."""

    dataset: Any
    steps: dict[str, list[int]] = field(default_factory=dict[str, list[int]])
    notes: list[str] = field(default_factory=list[str])  # what could not be read, for the page


@dataclass
class _Parts:
    """What has been read so far: variables along their own steps, times by step, stores to close."""

    variables: dict[str, Any] = field(default_factory=dict[str, Any])
    times: dict[int, float] = field(default_factory=dict[int, float])
    opened: list[Any] = field(default_factory=list[Any])
    not_loaded: list[str] = field(default_factory=list[str])


def load(run: RunFolder, *, npy: bool) -> Loaded:
    """The dataset of ``run``; ``npy=False`` leaves the per-step files unread (the report plots scalars only)."""
    import xarray as xr

    notes = list(run.notes)
    frame = read_table(run.path, notes)
    parts = _Parts()
    try:
        if frame is not None:
            _from_table(run.path, frame, parts, npy=npy)
            steps = {str(k): sorted(set(map(int, v))) for k, v in frame.groupby("analytic", sort=False)["step"]}
        else:
            _from_stores(run.path, parts, npy=npy)
            steps = {}
    except BaseException:  # no dataset to close them later: close the stores opened so far
        _closer(parts.opened)()
        raise
    for label, var in parts.variables.items():
        steps.setdefault(label, [int(s) for s in var["step"].values])
    every = sorted({s for v in steps.values() for s in v})
    dataset = xr.Dataset(coords={"step": np.asarray(every, dtype=np.int64)})
    for label, var in parts.variables.items():
        name = f"{label}_" if label in ("step", "time") else label
        dataset[name] = _fit(dataset, label, var.reindex(step=every))
    if any(not np.isnan(t) for t in parts.times.values()):
        dataset = dataset.assign_coords(time=("step", [parts.times.get(s, np.nan) for s in every]))
    summary = run.summary if run.summary is not None else {"ok": None, "error": None, "wall_s": None}
    dataset.attrs = {**summary, "directory": str(run.path.resolve()), "not_loaded": parts.not_loaded}
    if parts.opened:
        dataset.set_close(_closer(parts.opened))
    return Loaded(dataset, steps, notes)


def _closer(opened: list[Any]) -> Callable[[], None]:
    def close() -> None:
        for store in opened:
            store.close()

    return close


def _from_table(folder: Path, frame: Any, parts: _Parts, *, npy: bool) -> None:
    import xarray as xr

    kinds = label_kinds(frame)
    times = frame.groupby("step")["time"].first()  # the first time recorded at each step, NaN if none
    parts.times.update({int(s): float(t) for s, t in times.items()})
    scalars = frame[frame["scalar"]].drop_duplicates(["analytic", "step"])
    for label, kind in _ordered(kinds).items():
        if kind == "scalar":
            rows = scalars[scalars["analytic"] == label]
            values = rows["number"].to_numpy(dtype=float)
            parts.variables[label] = xr.DataArray(
                values, dims="step", coords={"step": rows["step"].to_numpy()}, attrs={"analytic": label}
            )
        elif (
            kind == "array" and (var := _open_array(folder, label, stored_paths(frame, label), parts, npy)) is not None
        ):
            parts.variables[label] = var
        else:
            parts.not_loaded.append(label)


def _ordered(kinds: dict[str, str]) -> dict[str, str]:
    """The analytics first, then the monitors, each in the order of their first result."""
    return dict(sorted(kinds.items(), key=lambda item: item[0].startswith("monitor:")))


def _open_array(folder: Path, label: str, paths: dict[int, list[str]], parts: _Parts, npy: bool) -> Any:
    """``label``'s results from the best store that holds them and can be read here; None if there is none."""
    every = [p for step_paths in paths.values() for p in step_paths]
    for suffix, module, _ in STORES:
        found = next((p for p in every if p.endswith(suffix)), None)
        if found is not None and importlib.util.find_spec(module) is not None:
            var = _open_store(folder / found, parts)
            if var is not None:
                return var
    files = {step: next((p for p in ps if p.endswith(".npy")), None) for step, ps in paths.items()}
    if npy and files and all(files.values()):
        return _npy(label, {step: folder / str(p) for step, p in files.items()})
    return None


def _open_store(path: Path, parts: _Parts) -> Any:
    """The one variable of a zarr or netcdf store, without its ``time`` (kept in ``parts.times``)."""
    import xarray as xr

    try:
        store = xr.open_zarr(path) if path.suffix == ".zarr" else xr.open_dataset(path, engine="h5netcdf")
    except Exception:  # a store cut short or unreadable here: try the next format
        return None
    parts.opened.append(store)
    name = next(iter(store.data_vars), None)
    if name is None or "step" not in store[name].dims:
        return None
    var = store[name]
    var = var.isel(step=~var.indexes["step"].duplicated())
    if "time" in var.coords:
        for step, time in zip(var["step"].values, var["time"].values, strict=True):
            if np.isnan(parts.times.get(int(step), np.nan)):
                parts.times[int(step)] = float(time)
        var = var.drop_vars("time")
    return var


def _from_stores(folder: Path, parts: _Parts, *, npy: bool) -> None:
    """Without a results table: every zarr and netcdf store (the label is in its attributes), then npy files."""
    for suffix, module, sub in STORES:
        if importlib.util.find_spec(module) is None or not (folder / sub).is_dir():
            continue
        for path in sorted((folder / sub).glob(f"*{suffix}")):
            var = _open_store(path, parts)
            if var is not None:
                parts.variables.setdefault(str(var.attrs.get("analytic", path.stem)), var)
    for sub in sorted((folder / "arrays").glob("*/")) if (folder / "arrays").is_dir() else ():
        files = {int(p.stem.removeprefix("step_")): p for p in sub.glob("step_*.npy") if p.stem[5:].isdigit()}
        if sub.name in parts.variables or not files:
            continue
        var = _npy(sub.name, files) if npy else None
        if var is None:
            parts.not_loaded.append(sub.name)
        else:
            parts.variables[sub.name] = var


def _npy(label: str, files: dict[int, Path]) -> Any:
    """One lazy array from one ``.npy`` file per step, if they all have one shape and dtype (else None)."""
    import dask.array as da
    import xarray as xr
    from dask.delayed import delayed

    steps = sorted(files)
    headers = {_npy_header(files[s]) for s in steps}
    if len(headers) != 1 or None in headers:
        return None
    shape, dtype = next(iter(headers))  # type: ignore[misc]
    load = delayed(np.load, pure=True)
    data = da.stack([da.from_delayed(load(str(files[s])), shape=shape, dtype=dtype) for s in steps])
    dims = ("step", *(f"dim_{i}" for i in range(len(shape))))
    return xr.DataArray(data, dims=dims, coords={"step": steps}, attrs={"analytic": label})


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype[Any]] | None:
    """Shape and dtype of a ``.npy`` file, from its header alone (None if unreadable or not plain numbers)."""
    fmt = np.lib.format
    try:
        with path.open("rb") as f:
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f)
    except (OSError, ValueError):
        return None
    return (tuple(shape), dtype) if dtype.kind in "biufc" else None


def _fit(dataset: Any, label: str, var: Any) -> Any:
    """``var`` with its own dims and coordinates prefixed by the analytic's name where they clash with the dataset's."""
    own = [d for d in var.dims if d != "step"] + [c for c in var.coords if c != "step" and c not in var.dims]
    if not any(_clashes(dataset, var, name) for name in own):
        return var
    prefix = store_name(label)
    renamed = var.to_dataset(name="_").rename({name: f"{prefix}_{name}" for name in own})
    return renamed["_"]


def _clashes(dataset: Any, var: Any, name: str) -> bool:
    """Whether the dim or coordinate ``name`` of ``var`` means something else in ``dataset``."""
    if name in dataset.dims and name in var.dims and dataset.sizes[name] != var.sizes[name]:
        return True
    if name in dataset.data_vars:
        return True
    if name in dataset.coords and name in var.coords:
        try:
            return not bool(dataset[name].equals(var[name]))
        except Exception:  # coordinates that cannot even be compared are not the same
            return True
    return (name in dataset.coords) != (name in var.coords) and name in dataset.dims

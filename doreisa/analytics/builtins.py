"""Built-in analytics, registered on the default registry. Each returns a lazy Dask value."""

# dask.array has no type annotations: its methods are unknown to pyright's strict mode.
# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import dask.array as da

from doreisa.analytics.registry import default_registry


@default_registry.analytic("mean")
def mean(x: da.Array) -> Any:
    """Mean over the whole array."""
    return x.mean()


@default_registry.analytic("max")
def maximum(x: da.Array) -> Any:
    """Largest value."""
    return x.max()


@default_registry.analytic("min")
def minimum(x: da.Array) -> Any:
    """Smallest value."""
    return x.min()


@default_registry.analytic("sum")
def total(x: da.Array) -> Any:
    """Sum over the whole array."""
    return x.sum()


@default_registry.analytic("std")
def std(x: da.Array) -> Any:
    """Standard deviation over the whole array."""
    return x.std()


@default_registry.analytic("histogram")
def histogram(x: da.Array, *, bins: int = 10, lo: float = 0.0, hi: float = 1.0) -> Any:
    """Counts of values in ``bins`` equal bins over ``[lo, hi]`` (values outside are not counted).

    An ``xarray.DataArray`` of dimension ``bin`` whose coordinates ``bin_lo`` and ``bin_hi`` are
    the edges of each bin, so that the Zarr and NetCDF outputs keep them.
    """
    import numpy as np
    import xarray as xr

    histogram_fn = cast(Callable[..., tuple[da.Array, da.Array]], da.histogram)  # typed NoReturn by dask
    counts, _ = histogram_fn(x, bins=bins, range=(lo, hi))
    edges = np.linspace(lo, hi, bins + 1)
    coords = {"bin_lo": ("bin", edges[:-1]), "bin_hi": ("bin", edges[1:])}
    return xr.DataArray(counts, dims=("bin",), coords=coords, name="histogram")


@default_registry.analytic("time_derivative", window=2)
def time_derivative(x: list[da.Array], *, times: list[float | None], steps: list[int]) -> Any:
    """Mean rate of change between the two steps of the window: mean(x1 - x0) / (t1 - t0).

    Without a simulation time, the step difference is used instead.
    """
    t0, t1 = times[0], times[-1]
    dt = (t1 - t0) if t0 is not None and t1 is not None else float(steps[-1] - steps[0])
    return (x[-1] - x[0]).mean() / dt

"""Analytics of the heat demo, registered with ``@doreisa.analytic``.

Each function receives Dask arrays (lists of them for windows) whose chunks live in Ray's
object store on the simulation's nodes; what it returns is computed there by Dask-on-Ray.
"""

from __future__ import annotations

import dask.array as da
import xarray as xr

import doreisa


@doreisa.analytic("hot_fraction")
def hot_fraction(temperature: da.Array, *, threshold: float = 350.0) -> da.Array:
    """Fraction of the domain hotter than ``threshold``."""
    return (temperature > threshold).mean()


@doreisa.analytic("max_dTdt", window=2)
def max_heating_rate(temperature: list[da.Array], *, times: list[float]) -> da.Array:
    """Largest local heating rate between the two steps of the window (K per unit time)."""
    before, after = temperature
    return ((after - before) / (times[1] - times[0])).max()


@doreisa.analytic("west_mean", named=True)
def west_mean(temperature: xr.DataArray) -> xr.DataArray:
    """Mean temperature of the western half, selected by coordinate (the contract names dims y, x)."""
    return temperature.sel(x=slice(0, temperature.sizes["x"] // 2 - 1)).mean()

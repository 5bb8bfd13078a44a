"""``save``: a Zarr store that grows one step per call, written chunk by chunk by the tasks that hold the blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from doreisa.analytics import default_registry
from doreisa.analytics.snapshots import _chunk
from doreisa.errors import AnalyticsError

save = default_registry.get("save").fn


def _field(step: int, shape: tuple[int, ...] = (6, 8)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float64).reshape(shape) + 100 * step


def _save(x: Any, step: int, output: Path | None, **options: Any) -> Any:
    time = None if step == 0 else step / 4
    (written,) = dask.compute(save(x, step=step, time=time, label="T snap", output=output, **options), scheduler="sync")
    return written


def test_each_call_adds_a_step_that_xarray_reads(tmp_path: Path) -> None:
    steps = [0, 10, 20]
    for step in steps:
        assert _save(da.from_array(_field(step), chunks=(3, 4)), step, tmp_path, dims=["y", "x"]) == 6 * 8 * 8
    with xr.open_zarr(tmp_path / "snapshots" / "T snap.zarr") as ds:
        snap = ds["T_snap"]
        assert snap.dims == ("step", "y", "x") and snap.attrs["analytic"] == "T snap"
        assert snap.encoding["chunks"] == (1, 3, 4), "one Zarr chunk per block"
        np.testing.assert_array_equal(ds["step"], steps)
        np.testing.assert_array_equal(ds["time"], [np.nan, 2.5, 5.0])
        np.testing.assert_array_equal(snap.values, [_field(s) for s in steps])


def test_dims_come_from_an_xarray_input_and_a_path_can_be_given(tmp_path: Path) -> None:
    x = xr.DataArray(da.from_array(_field(1), chunks=(2, 8)), dims=("lat", "lon"))
    _save(x, 1, None, path=str(tmp_path / "elsewhere.zarr"))
    with xr.open_zarr(tmp_path / "elsewhere.zarr") as ds:
        assert ds["T_snap"].dims == ("step", "lat", "lon")
        np.testing.assert_array_equal(ds["T_snap"].values[0], _field(1))


@pytest.mark.parametrize(
    ("sizes", "chunk"), [((4, 4, 4), 4), ((4, 4, 2), 4), ((5,), 5), ((6, 4, 2), 2), ((3, 5), 1), ((4, 6), 2)]
)
def test_zarr_chunks_never_straddle_two_blocks(sizes: tuple[int, ...], chunk: int) -> None:
    assert _chunk(sizes) == chunk
    edges = np.cumsum((0, *sizes))
    assert all(e % chunk == 0 for e in edges[:-1]), "every block starts on a chunk boundary"


def test_irregular_blocks_are_written_exactly(tmp_path: Path) -> None:
    x = da.from_array(_field(3, (10, 7)), chunks=((6, 4), (3, 4)))  # as ranks of unequal sizes give
    _save(x, 3, tmp_path)
    with xr.open_zarr(tmp_path / "snapshots" / "T snap.zarr") as ds:
        assert ds["T_snap"].dims == ("step", "dim_0", "dim_1") and ds["T_snap"].encoding["chunks"] == (1, 6, 1)
        np.testing.assert_array_equal(ds["T_snap"].values[0], _field(3, (10, 7)))


def test_what_cannot_be_saved_is_an_analytics_error(tmp_path: Path) -> None:
    x = da.from_array(_field(0), chunks=(3, 4))
    with pytest.raises(AnalyticsError, match=r"save: no output folder to write snapshots/T snap.zarr in"):
        save(x, step=0, time=None, label="T snap", output=None)
    with pytest.raises(AnalyticsError, match=r"save: dims \['y'\] name 1 dimensions; the array has 2"):
        save(x, step=0, time=None, label="T snap", output=tmp_path, dims=["y"])
    _save(x, 0, tmp_path)
    with pytest.raises(AnalyticsError, match=r"holds arrays of shape \(6, 8\); this step's is \(3, 8\)"):
        save(x[:3], step=1, time=None, label="T snap", output=tmp_path)


def test_nothing_is_computed_until_the_runtime_computes(tmp_path: Path) -> None:
    x = da.from_array(_field(0), chunks=(3, 4))
    lazy = save(x, step=0, time=None, label="T snap", output=tmp_path)
    with xr.open_zarr(tmp_path / "snapshots" / "T snap.zarr") as ds:
        assert ds.sizes["step"] == 1 and np.isnan(ds["T_snap"].values).all(), "grown, not yet written"
    assert int(lazy.compute(scheduler="sync")) == x.nbytes

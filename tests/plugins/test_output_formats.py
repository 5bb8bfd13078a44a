"""The zarr, netcdf and parquet formats: what xarray and pandas read back, and what a failure costs."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import doreisa
from doreisa.contract import parse_contract
from doreisa.errors import ContractError, OutputError
from doreisa.plugins import SINKS, Result
from doreisa.plugins import stores as stores_module
from doreisa.plugins.stores import store_name
from doreisa.runtime.cluster.results import ResultWriter

STEPS = list(range(0, 40, 4))


def _histogram(step: int) -> xr.DataArray:
    edges = np.linspace(0.0, 1.0, 6)
    coords = {"bin_lo": ("bin", edges[:-1]), "bin_hi": ("bin", edges[1:])}
    return xr.DataArray(np.arange(5) + step, dims=("bin",), coords=coords, attrs={"units": "count"})


def _field(step: int) -> np.ndarray:
    return np.arange(12.0).reshape(3, 4) * step


def _time(step: int) -> float | None:
    return None if step == 8 else step * 0.25


def _write_run(directory: Path, formats: tuple[str, ...]) -> ResultWriter:
    writer = ResultWriter(directory, formats)
    for step in STEPS:
        writer.record("mean_T", step, _time(step), np.float64(step / 2))
        writer.record("T_histogram", step, _time(step), _histogram(step))
        writer.record("field", step, _time(step), _field(step))
        writer.record("monitor:max(temperature)", step, _time(step), float(step))
    writer.close()
    return writer


@pytest.fixture(params=[1, 3, 1000], ids=["batch-1", "batch-3", "one-batch"])
def batch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Results appended one by one, in batches that do not divide the run, and all at the end."""
    monkeypatch.setattr(stores_module, "BATCH", request.param)
    return request.param


def _open(fmt: str, path: Path) -> xr.Dataset:
    return xr.open_zarr(path) if fmt == "zarr" else xr.open_dataset(path, engine="h5netcdf")


@pytest.mark.parametrize(("fmt", "suffix"), [("zarr", "zarr"), ("netcdf", "nc")])
def test_each_analytic_is_one_dataset_with_its_dims_coords_and_steps(
    tmp_path: Path, batch: int, fmt: str, suffix: str
) -> None:
    writer = _write_run(tmp_path, (fmt, "csv"))
    assert writer.failures == {} and writer.unsaved == 0
    folder = tmp_path / fmt
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{n}.{suffix}" for n in ("mean_T", "T_histogram", "field", "monitor_max_temperature")
    )
    times = [np.nan if _time(s) is None else _time(s) for s in STEPS]
    with _open(fmt, folder / f"T_histogram.{suffix}") as ds:
        hist = ds["T_histogram"]
        assert hist.dims == ("step", "bin") and hist.attrs == {"units": "count", "analytic": "T_histogram"}
        np.testing.assert_array_equal(ds["step"], STEPS)
        np.testing.assert_array_equal(ds["time"], times)  # a step without a time is NaN
        np.testing.assert_array_equal(ds["bin_lo"], np.linspace(0.0, 1.0, 6)[:-1])
        np.testing.assert_array_equal(ds["bin_hi"].values[-1], 1.0)
        np.testing.assert_array_equal(hist.values, [np.arange(5) + s for s in STEPS])
    with _open(fmt, folder / f"field.{suffix}") as ds:
        assert ds["field"].dims == ("step", "dim_0", "dim_1")
        np.testing.assert_array_equal(ds["field"].values, [_field(s) for s in STEPS])
    with _open(fmt, folder / f"monitor_max_temperature.{suffix}") as ds:
        monitor = ds["monitor_max_temperature"]
        assert monitor.dims == ("step",) and monitor.attrs["analytic"] == "monitor:max(temperature)"
        np.testing.assert_array_equal(monitor.values, np.array(STEPS, dtype=float))
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert {r["file"] for r in rows if r["analytic"] == "field"} == {f"{fmt}/field.{suffix}"}


def test_a_dataset_is_readable_between_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # what a user reading the store while the run goes on (or after it was killed) sees
    monkeypatch.setattr(stores_module, "BATCH", 4)
    writer = ResultWriter(tmp_path, ("zarr", "netcdf"))
    for step in range(10):
        writer.record("mean_T", step, float(step), np.float64(step))
    with xr.open_zarr(tmp_path / "zarr" / "mean_T.zarr") as ds:
        np.testing.assert_array_equal(ds["mean_T"].values, range(8))  # two batches written, two results buffered
    with xr.open_dataset(tmp_path / "netcdf" / "mean_T.nc", engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["mean_T"].values, range(8))
    writer.close()
    with xr.open_zarr(tmp_path / "zarr" / "mean_T.zarr") as ds:
        np.testing.assert_array_equal(ds["mean_T"].values, range(10))


def test_parquet_is_the_csv_table_typed(tmp_path: Path) -> None:
    _write_run(tmp_path, ("npy", "csv", "parquet"))
    table = pd.read_parquet(tmp_path / "results.parquet")
    text = pd.read_csv(tmp_path / "results.csv", keep_default_na=False)
    assert list(table.columns) == list(text.columns) == ["analytic", "step", "time", "value", "file"]
    assert [str(t) for t in table.dtypes[1:4]] == ["int64", "float64", "float64"]
    assert len(table) == len(text) == 4 * len(STEPS)
    assert table["analytic"].tolist() == text["analytic"].tolist()
    assert table["step"].tolist() == text["step"].tolist()
    assert table["file"].fillna("").tolist() == text["file"].tolist()
    means = table[table["analytic"] == "mean_T"]
    assert means["value"].tolist() == [s / 2 for s in STEPS]
    assert means["time"].isna().tolist() == [s == 8 for s in STEPS]
    assert table[table["analytic"] == "T_histogram"]["value"].isna().all(), "an array has no value in a table"
    assert table[table["analytic"] == "field"]["file"].iloc[1] == "arrays/field/step_00000004.npy"


def test_parquet_writes_row_groups_as_it_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    sink = SINKS.get("parquet").factory(tmp_path)
    monkeypatch.setattr(sink, "ROWS", 3)
    for step in range(7):
        sink.record(Result("a", step, None, step))
    sink.close()
    meta = pq.ParquetFile(tmp_path / "results.parquet").metadata
    assert (meta.num_row_groups, meta.num_rows) == (3, 7)


def test_a_result_whose_shape_changes_is_lost_counted_and_the_rest_is_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = ResultWriter(tmp_path, ("zarr", "csv"))
    with caplog.at_level(logging.ERROR, logger="doreisa.results"):
        writer.record("field", 0, None, np.zeros((2, 2)))
        writer.record("field", 1, None, np.zeros((3, 2)))  # a region that grew: not the store's shape
        writer.record("field", 2, None, np.ones((2, 2)))
        writer.record("label", 2, None, np.array(["a", "b"]))  # not numbers
        writer.close()
    (failure,) = writer.failures.values()
    assert (failure.format, failure.lost) == ("zarr", 2)
    assert "result of 'field' at step 1 has dims ('dim_0', 'dim_1') and shape (3, 2); its store holds" in failure.error
    assert writer.unsaved == 2, "the two array results no store kept"
    assert len(caplog.records) == 1, "logged once per format; the summary counts the rest"
    with xr.open_zarr(tmp_path / "zarr" / "field.zarr") as ds:
        np.testing.assert_array_equal(ds["step"], [0, 2])
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 5, "the table has every result"


def test_a_batch_that_cannot_be_written_counts_every_result_it_held(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, ("netcdf",))
    for step in range(3):
        writer.record("mean", step, None, float(step))
    (tmp_path / "netcdf" / "mean.nc").mkdir()  # the file cannot be created (as on a full or read-only disk)
    writer.close()
    (failure,) = writer.failures.values()
    assert failure.lost == 3 and "netcdf: could not write 'mean' (steps 0-2)" in failure.error


def test_reserved_dimension_names_are_refused_with_the_fix(tmp_path: Path) -> None:
    sink = SINKS.get("zarr").factory(tmp_path)
    value = xr.DataArray(np.zeros(3), dims=("time",))
    with pytest.raises(OutputError, match=r"result of 'x' has the dimension 'time', which the store uses; rename it"):
        sink.record(Result("x", 0, None, value))


def test_store_names_are_file_and_variable_names() -> None:
    assert store_name("monitor:max(temperature)") == "monitor_max_temperature"
    assert store_name("mean_T") == "mean_T"
    assert store_name("a/b c.d") == "a_b_c.d"


def test_labels_that_read_alike_get_stores_of_their_own(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, ("zarr",))
    writer.record("a:b", 0, None, 1.0)
    writer.record("a_b", 0, None, 2.0)
    writer.close()
    assert sorted(p.name for p in (tmp_path / "zarr").iterdir()) == ["a_b.zarr", "a_b_.zarr"]
    with xr.open_zarr(tmp_path / "zarr" / "a_b_.zarr") as ds:
        assert ds["a_b_"].attrs["analytic"] == "a_b" and ds["a_b_"].values.tolist() == [2.0]


@pytest.fixture
def needs_a_missing_package() -> Iterator[None]:
    doreisa.register_sink("toy_hdf", requires=("doreisa_no_such_module",), extra="toy")(lambda directory: None)
    try:
        yield
    finally:
        SINKS.unregister("toy_hdf")


def test_a_format_whose_package_is_missing_is_refused_naming_the_extra(needs_a_missing_package: None) -> None:
    text = "arrays:\n  t: {dtype: float64, shape: [4]}\noutputs: {formats: [csv, toy_hdf]}\n"
    with pytest.raises(
        ContractError,
        match=r"outputs\.formats\[1\].*output format 'toy_hdf' cannot be written here: it needs the Python package "
        r"doreisa_no_such_module: pip install 'doreisa\[toy\]'",
    ):
        parse_contract(text)


def test_built_in_formats_name_their_extras() -> None:
    assert {n: (SINKS.get(n).requires, SINKS.get(n).extra) for n in ("zarr", "netcdf", "parquet")} == {
        "zarr": (("zarr", "xarray"), "zarr"),
        "netcdf": (("h5netcdf", "xarray"), "netcdf"),
        "parquet": (("pyarrow",), None),
    }
    assert all(SINKS.get(n).missing() is None for n in SINKS), "the dev install has every format"


def test_every_result_type_reaches_the_stores(tmp_path: Path) -> None:
    values: list[Any] = [True, 3, 2.5, np.int32(4), np.float32(1.5), np.array(7.0), xr.DataArray(2.0)]
    writer = ResultWriter(tmp_path, ("netcdf",))
    for step, value in enumerate(values):
        writer.record("v", step, None, value)
    writer.close()
    assert writer.failures == {}
    with xr.open_dataset(tmp_path / "netcdf" / "v.nc", engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["v"].values, [1, 3, 2.5, 4, 1.5, 7, 2])

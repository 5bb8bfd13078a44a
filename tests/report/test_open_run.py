"""doreisa.open_run: a run folder as one xarray.Dataset along step, whatever formats the run wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runfolder import CHANGED, MONITOR_STEPS, NO_TIME, SCRIPT, STEPS, corner, histogram, time_of, write_run

import doreisa
from doreisa.errors import DoreisaError
from doreisa.runtime.cluster.results import ResultWriter

ALL_STEPS = sorted(set(STEPS) | set(MONITOR_STEPS))


def _times() -> list[float]:
    return [np.nan if time_of(s) is None else time_of(s) for s in ALL_STEPS]  # type: ignore[misc]


@pytest.mark.parametrize(
    "formats", [("csv", "zarr"), ("parquet", "zarr"), ("csv", "zarr", "parquet"), ("csv", "netcdf")], ids="+".join
)
def test_scalars_arrays_time_and_summary(tmp_path: Path, formats: tuple[str, ...]) -> None:
    write_run(tmp_path, formats)
    with doreisa.open_run(tmp_path) as run:
        assert list(run.data_vars) == ["mean_T", "max_T", "T_histogram", "corner", "monitor:max(temperature)"]
        np.testing.assert_array_equal(run["step"], ALL_STEPS)
        np.testing.assert_array_equal(run["time"], _times())  # NaN at the step the simulation gave no time
        assert np.isnan(run["time"].sel(step=NO_TIME))
        mean = run["mean_T"]
        np.testing.assert_array_equal(mean.sel(step=STEPS), np.array(STEPS) / 10)
        assert mean.sel(step=[5, 15, 95]).isnull().all()  # only the monitor has these steps
        assert run["max_T"].sel(step=80) == 80.0
        assert np.isnan(run["max_T"].sel(step=10))  # no result there
        assert np.isnan(run["max_T"].sel(step=60))  # a NaN result
        np.testing.assert_array_equal(run["monitor:max(temperature)"], np.array(ALL_STEPS) + 0.5)
        hist = run["T_histogram"]
        assert hist.dims == ("step", "bin")
        np.testing.assert_array_equal(hist.sel(step=20), histogram(20).values)
        np.testing.assert_array_equal(run["bin_lo"], histogram(0)["bin_lo"].values)
        assert hist.sel(step=5).isnull().all()
        assert run["corner"].dims == ("step", "dim_0", "dim_1")
        np.testing.assert_array_equal(run["corner"].sel(step=90), corner(90))
        assert (run.attrs["ok"], run.attrs["wall_s"], run.attrs["ranks"]) == (False, 12.5, 2)
        assert run.attrs["error"].startswith("1 analytic failure(s); first: corner at step 20")
        assert run.attrs["cadence_changes"][0]["step"] == CHANGED
        assert run.attrs["directory"] == str(tmp_path.resolve())
        assert run.attrs["not_loaded"] == []


def test_npy_files_make_a_lazy_array_and_clashing_dims_are_renamed(tmp_path: Path) -> None:
    write_run(tmp_path, ("csv", "npy"))
    with doreisa.open_run(tmp_path) as run:
        hist = run["T_histogram"]
        assert hist.dims == ("step", "dim_0") and hist.chunks is not None  # dask: nothing read yet
        np.testing.assert_array_equal(hist.sel(step=40), histogram(40).values)
        # corner's first dim (2) is not T_histogram's dim_0 (5): it takes the analytic's name
        assert run["corner"].dims == ("step", "corner_dim_0", "corner_dim_1")
        np.testing.assert_array_equal(run["corner"].sel(step=10), corner(10))
        assert run["corner"].sel(step=15).isnull().all()


def test_arrays_no_store_kept_are_listed_not_loaded(tmp_path: Path) -> None:
    write_run(tmp_path, ("csv",))
    with doreisa.open_run(tmp_path) as run:
        assert list(run.data_vars) == ["mean_T", "max_T", "monitor:max(temperature)"]
        assert run.attrs["not_loaded"] == ["T_histogram", "corner"]


def test_npy_files_of_different_shapes_are_not_loaded(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, ("csv", "npy"))
    writer.record("grows", 0, None, np.zeros(2))
    writer.record("grows", 1, None, np.zeros(3))
    writer.close()
    (tmp_path / "provenance.jsonl").write_text("")
    with doreisa.open_run(tmp_path) as run:
        assert list(run.data_vars) == [] and run.attrs["not_loaded"] == ["grows"]
        assert "time" not in run.coords  # no step had a time


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_scalar_that_is_always_nan_is_a_scalar_not_a_missing_array(tmp_path: Path, fmt: str) -> None:
    writer = ResultWriter(tmp_path, (fmt,))
    for step in range(3):
        writer.record("broken", step, float(step), float("nan"))
        writer.record("flag", step, float(step), step == 1)
    writer.close()
    with doreisa.open_run(tmp_path) as run:
        assert run["broken"].isnull().all() and run.attrs["not_loaded"] == []
        np.testing.assert_array_equal(run["flag"], [0.0, 1.0, 0.0])
        np.testing.assert_array_equal(run["time"], [0.0, 1.0, 2.0])
        assert run.attrs["ok"] is None  # no summary.json: the run was killed


def test_without_a_table_the_stores_are_read(tmp_path: Path) -> None:
    write_run(tmp_path, ("zarr",))
    with doreisa.open_run(tmp_path) as run:
        assert sorted(run.data_vars) == sorted(["mean_T", "max_T", "T_histogram", "corner", "monitor:max(temperature)"])
        np.testing.assert_array_equal(run["mean_T"].sel(step=STEPS), np.array(STEPS) / 10)
        np.testing.assert_array_equal(run["time"], _times())
        np.testing.assert_array_equal(run["T_histogram"].sel(step=30), histogram(30).values)


def test_a_parquet_file_cut_short_falls_back_to_the_csv(tmp_path: Path) -> None:
    write_run(tmp_path, ("csv", "parquet"))
    parquet = tmp_path / "results.parquet"
    parquet.write_bytes(parquet.read_bytes()[:-20])  # a killed run writes no index
    with doreisa.open_run(tmp_path) as run:
        np.testing.assert_array_equal(run["mean_T"].sel(step=STEPS), np.array(STEPS) / 10)


def test_a_run_killed_mid_row_keeps_every_complete_row(tmp_path: Path) -> None:
    write_run(tmp_path, ("csv",))
    (tmp_path / "summary.json").unlink()
    with (tmp_path / "results.csv").open("a") as f:
        f.write("mean_T,9")  # cut short while writing
    with doreisa.open_run(tmp_path) as run:
        assert run["step"].values[-1] == 95
        assert (run.attrs["ok"], run.attrs["error"], run.attrs["wall_s"]) == (None, None, None)


def test_an_older_summary_is_kept_as_it_is(tmp_path: Path) -> None:
    write_run(tmp_path, ("csv",))
    summary = json.loads((tmp_path / "summary.json").read_text())
    old = {k: v for k, v in summary.items() if k not in ("output_failures", "warnings")}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    with doreisa.open_run(tmp_path) as run:
        assert "output_failures" not in run.attrs and run.attrs["errors"][0]["error"].endswith(SCRIPT)


def test_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(DoreisaError, match=r"nowhere: no such folder; give the folder that `doreisa run --output"):
        doreisa.open_run(tmp_path / "nowhere")
    (tmp_path / "contract.yaml").write_text("arrays: {}\n")
    with pytest.raises(DoreisaError, match=r"is not a doreisa run folder: it has none of summary.json, results.csv"):
        doreisa.open_run(tmp_path)
    with pytest.raises(DoreisaError, match=r"contract.yaml is a file, not a run folder"):
        doreisa.open_run(tmp_path / "contract.yaml")


def test_a_summary_or_table_that_doreisa_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text('{"ok": tr')
    with pytest.raises(DoreisaError, match=r"summary.json: not readable as JSON .*killed while writing it"):
        doreisa.open_run(tmp_path)
    (tmp_path / "summary.json").write_text("[1, 2]")
    with pytest.raises(DoreisaError, match=r"summary.json: expected a JSON object at the top level, got list"):
        doreisa.open_run(tmp_path)
    (tmp_path / "summary.json").write_text('{"ok": true}')
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DoreisaError, match=r"results.csv: not a results table: no column analytic, step, time"):
        doreisa.open_run(tmp_path)


def test_importing_the_report_loads_nothing_heavy() -> None:
    watch = ("xarray", "pandas", "matplotlib", "dask", "ray", "pyarrow")
    code = f"import sys, doreisa, doreisa.report; doreisa.open_run; print([m for m in {watch!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_a_text_result_is_not_loaded_and_a_label_named_like_a_coordinate_is_renamed(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, ("csv",))
    for step in range(2):
        writer.record("status", step, 0.5 * step, "converged")
        writer.record("time", step, 0.5 * step, 10.0 + step)
    writer.close()
    with doreisa.open_run(tmp_path) as run:
        assert run.attrs["not_loaded"] == ["status"]
        np.testing.assert_array_equal(run["time_"], [10.0, 11.0])
        np.testing.assert_array_equal(run["time"], [0.0, 0.5])

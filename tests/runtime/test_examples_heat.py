"""The heat examples, as a user runs them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from doreisa.contract import load_contract
from doreisa.testing import run_coupled

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

HEAT = Path(__file__).parents[2] / "examples" / "heat"


def test_heat_source_trigger_fires_and_releases(ray_cluster: Any) -> None:
    contract = HEAT / "contract_trigger.yaml"
    load_contract(contract)
    sim = [
        sys.executable,
        str(HEAT / "simulation.py"),
        "--size",
        "128",
        "--steps",
        "250",
        "--spot",
        "40",
        "--source",
        "60:120",
    ]
    run = run_coupled(contract.read_text(), sim, nranks=4)
    assert run.returncode == 0, run.output
    on, off = run.session.provenance.records
    assert on["triggers"] == {"heat_source": True} and on["values"]["max(temperature)"] > 350
    assert off["triggers"] == {"heat_source": False} and off["values"]["max(temperature)"] < 340
    assert 60 < on["step"] < 120 < off["step"] < 250
    monitor = run.values["monitor:max(temperature)"]
    assert monitor[on["decided_at"]] > 350 >= monitor[on["decided_at"] - 1], "fired at the step it happened"
    steps = sorted(run.values["max_T"])
    fast = [s for s in steps if on["step"] <= s < off["step"]]
    assert fast == list(range(-(-on["step"] // 5) * 5, off["step"], 5))
    assert [s for s in steps if s < on["step"] or s >= off["step"]] == [
        s for s in (0, 50, 100, 150, 200) if s < on["step"] or s >= off["step"]
    ]
    for s in steps:
        assert run.values["max_T"][s] == pytest.approx(monitor[s]), "analytics and monitor agree"


@pytest.mark.slow
def test_main_demo_runs_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, str(HEAT / "run_demo.py"), "--np", "2", "--steps", "40", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["steps_analysed"] == {"temperature": 4}
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["analytic"] for r in rows} == {
        "mean_T",
        "max_T",
        "dTdt_mean",
        "max_dTdt",
        "west_mean",
        "hot_fraction",
        "T_histogram",
    }
    assert (out / "timeseries.png").stat().st_size > 10_000


def test_heat_outputs_open_in_xarray_and_pandas(ray_cluster: Any, tmp_path: Path) -> None:
    from doreisa.analytics.loading import import_analytics

    import_analytics([str(HEAT / "analytics.py")])
    text = (HEAT / "contract.yaml").read_text() + "outputs: {formats: [csv, zarr, netcdf, parquet]}\n"
    sim = [sys.executable, str(HEAT / "simulation.py"), "--steps", "31"]
    run = run_coupled(text, sim, nranks=2, output=tmp_path)
    assert run.returncode == 0, run.output
    assert run.session.results.failures == {}
    steps = [0, 10, 20, 30]
    table = pd.read_parquet(tmp_path / "results.parquet")
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(table) == len(rows) and sorted(set(table["analytic"])) == sorted({r["analytic"] for r in rows})
    means = table[table["analytic"] == "mean_T"]
    assert means["step"].tolist() == steps and means["value"].tolist() == [run.values["mean_T"][s] for s in steps]
    for opened in (
        xr.open_zarr(tmp_path / "zarr" / "T_histogram.zarr"),
        xr.open_dataset(tmp_path / "netcdf" / "T_histogram.nc"),
    ):
        with opened as ds:
            assert ds["T_histogram"].dims == ("step", "bin") and ds["step"].values.tolist() == steps
            assert ds["time"].values.tolist() == [pytest.approx(t) for t in means["time"]]  # the simulation's time
            np.testing.assert_allclose(ds["bin_lo"][[0, -1]], [290.0, 460.0 - 170.0 / 20])
            np.testing.assert_array_equal(ds["T_histogram"], [run.values["T_histogram"][s] for s in steps])
    with xr.open_zarr(tmp_path / "zarr" / "mean_T.zarr") as ds:
        assert ds["mean_T"].values.tolist() == means["value"].tolist()
    with xr.open_zarr(tmp_path / "zarr" / "dTdt_mean.zarr") as ds:
        assert ds["step"].values.tolist() == steps[1:], "a window of 2 starts at the second analysed step"


@pytest.mark.slow
def test_event_demo_under_doreisa_run(tmp_path: Path) -> None:
    """examples/heat/contract_events.yaml as its comment says to run it: a rate trigger catches the heat
    source early, the histogram runs only while it lasts, one snapshot of its first step is written."""
    out = tmp_path / "events"
    doreisa = Path(sys.executable).parent / "doreisa"
    sim = [
        "python",
        str(HEAT / "simulation.py"),
        "--size",
        "128",
        "--steps",
        "160",
        "--spot",
        "40",
        "--source",
        "60:120",
    ]
    command = [str(doreisa), "run", str(HEAT / "contract_events.yaml"), "--np", "4", "--output", str(out), "--quiet"]
    proc = subprocess.run([*command, "--", *sim], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["nonfinite"] == {}
    records = [json.loads(line) for line in (out / "provenance.jsonl").read_text().splitlines()]
    on, off = [r for r in records if r["kind"] == "change"]
    assert on["triggers"] == {"heating": True, "first_hot_step": True} and 60 < on["decided_at"] < 120
    rise = on["values"]["max(temperature)"] - on["values"]["prev(max(temperature))"]
    assert rise / 0.2 > 2, "the rate that fired, K per unit of simulation time (dt 0.2)"
    assert off["triggers"] == {"heating": False, "first_hot_step": False} and 120 <= off["decided_at"] < 130
    rows = pd.read_csv(out / "results.csv")
    hot = sorted(rows[rows.analytic == "hot_histogram"].step)
    assert hot == [s for s in range(on["step"], off["step"]) if s % 2 == 0], "only while active, every 2nd step"
    assert sorted(rows[rows.analytic == "max_T"].step) == sorted({0, 50, 150, *hot})
    actions = [(r["step"], r["analytic"]) for r in records if r["kind"] == "action"]
    assert actions.count((hot[0], "first_hot_snapshot")) == 1 and len(actions) == len(hot) + 1
    snapshot = xr.open_zarr(out / "snapshots" / "first_hot_snapshot.zarr")
    assert list(snapshot.step.values) == [hot[0]] and snapshot.first_hot_snapshot.shape == (1, 128, 128)

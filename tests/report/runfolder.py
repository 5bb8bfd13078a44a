"""Run folders written the way ``doreisa run`` writes them, without Ray: the runtime's own writers.

``ResultWriter`` writes the tables and stores, ``Provenance`` the provenance file, and
``run_summary`` the summary, from the objects a session holds (stand-ins here, as in
tests/runtime/unit/test_summary.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import xarray as xr

from doreisa.runtime.cluster.driver import Failures
from doreisa.runtime.cluster.results import OutputFailure, Provenance, ResultWriter
from doreisa.runtime.cluster.summary import run_summary
from doreisa.runtime.cluster.watch import RunState
from doreisa.runtime.protocol import (
    Applied,
    CadenceChange,
    Decision,
    RankClosed,
    RankError,
    RankJoined,
    RankStats,
    StepLost,
)

#: Steps the analytics ran at; the monitor runs every 5 steps, so steps 5, 15, ... have no analytic result.
STEPS = list(range(0, 100, 10))
MONITOR_STEPS = list(range(0, 100, 5))
NO_TIME = 30  # the simulation gave no time at this step
SKIPPED, LOST, CHANGED = 50, 70, 40
SCRIPT = "<script>alert('x')</script>"

CONTRACT = """\
arrays:
  temperature: {dtype: float64, shape: [8, 8], dims: [y, x]}
cadence: {every: 10}
monitors:
  - {array: temperature, reductions: [max]}
analytics:
  - {function: mean, name: mean_T, arrays: [temperature]}
  - {function: max, name: max_T, arrays: [temperature]}
  - {function: histogram, name: T_histogram, arrays: [temperature], params: {bins: 5, lo: 0.0, hi: 1.0}}
  - {function: corner, arrays: [temperature]}
"""


def time_of(step: int) -> float | None:
    return None if step == NO_TIME else step * 0.5


def histogram(step: int) -> xr.DataArray:
    edges = np.linspace(0.0, 1.0, 6)
    return xr.DataArray(
        np.arange(5) + step, dims=("bin",), coords={"bin_lo": ("bin", edges[:-1]), "bin_hi": ("bin", edges[1:])}
    )


def corner(step: int) -> np.ndarray:
    return np.arange(6.0).reshape(2, 3) + step


def write_results(folder: Path, formats: Sequence[str]) -> None:
    """Every kind of result, as the driver records them: scalars, a NaN, arrays, a monitor."""
    writer = ResultWriter(folder, formats)
    for step in MONITOR_STEPS:
        if step in STEPS:
            writer.record("mean_T", step, time_of(step), np.float64(step / 10))
            if step % 20 == 0:  # max_T has no result at 10, 30, ...
                writer.record("max_T", step, time_of(step), float("nan") if step == 60 else float(step))
            writer.record("T_histogram", step, time_of(step), histogram(step))
            writer.record("corner", step, time_of(step), corner(step))
        writer.record("monitor:max(temperature)", step, time_of(step), np.float32(step + 0.5))
    writer.close()
    assert writer.failures == {}


def write_provenance(folder: Path, closed: dict[int, RankStats]) -> Provenance:
    provenance = Provenance(folder)
    decision = Decision(seq=1, step=CHANGED - 2, source="monitor:heat_source", values={"max(temperature)": 351.2})
    change = CadenceChange("temperature", {"every": 10, "start": 0.0}, {"every": 5, "start": 0.0})
    provenance.write(Applied(rank=0, applied_at=CHANGED, decision=decision, changes=(change,)))
    provenance.skipped(closed)
    provenance.close()
    return provenance


def write_summary(folder: Path, provenance: Provenance, state: RunState) -> dict[str, Any]:
    failures = Failures()
    failures.add("corner", 20, f"ValueError: bad corner {SCRIPT}", "Traceback (most recent call last):\n  boom\n")
    session = SimpleNamespace(
        state=state,
        driver=SimpleNamespace(failures=failures, counts=SimpleNamespace(steps={"temperature": 9}, calls=40)),
        bound=[SimpleNamespace(label="trend", arrays=("temperature",), window=50)],
        last_node_counts=[],
        cpu_started=0.0,
        cuts=SimpleNamespace(misses=4, hits=36),
        results=SimpleNamespace(
            count=60,
            unsaved=0,
            failures={"netcdf": OutputFailure("netcdf", 3, "OutputError: disk full")},
            first_at=None,
        ),
        provenance=provenance,
    )
    summary = run_summary(session, None, None, [], 12.5)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def ranks_state() -> RunState:
    state = RunState()
    for rank in range(2):
        state.record(RankJoined(rank, 2, "node-a"))
        stats = RankStats(
            published=9 + rank, bytes_copied=(9 + rank) * 512, skipped=1, skipped_steps=(("temperature", SKIPPED),)
        )
        state.record(RankClosed(rank, "node-a", stats))
    state.lost_steps.append(StepLost("temperature", LOST, 1, 2, (0,)))
    state.record(RankError(1, "node-a", f"store refused a block {SCRIPT}"))
    return state


def write_run(folder: Path, formats: Sequence[str] = ("csv", "zarr", "parquet")) -> dict[str, Any]:
    """A whole run folder; returns its summary."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "contract.yaml").write_text(CONTRACT)
    (folder / "doreisa.log").write_text("")
    write_results(folder, formats)
    state = ranks_state()
    provenance = write_provenance(folder, state.closed)
    return write_summary(folder, provenance, state)

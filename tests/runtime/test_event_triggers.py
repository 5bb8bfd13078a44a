"""Event triggers on real MPI ranks: ``finite: true`` (NaN and Inf counted at the ranks on every step,
reported, a trigger on them) and the history of a reduction (``prev``, ``delta``, ``rate``)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from doreisa.runtime.cluster.summary import format_summary, run_summary
from doreisa.testing import run_coupled

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

SIM = Path(__file__).parent / "sims" / "fill.py"

CONTRACT = """
arrays:
  field: {dtype: float64, shape: [8, 8], finite: true}
cadence: {every: 10}
triggers:
  - name: blowup
    when: nonfinite(field) > 0
    action: {cadence: {every: 1}}
analytics:
  - {function: max, arrays: [field]}
"""


def test_nonfinite_values_are_counted_reported_and_fire_a_trigger(ray_cluster: Any) -> None:
    sim = [sys.executable, str(SIM), "--shape", "8,8", "--steps", "30", "--nonfinite", "13:16"]
    run = run_coupled(CONTRACT, sim, nranks=2)
    assert run.returncode == 0, run.output
    counted = run.values["monitor:nonfinite(field)"]
    assert counted == {s: (2.0 if 13 <= s < 16 else 0.0) for s in range(30)}, "every step, copied or not"
    on, off = run.session.provenance.records
    assert (on["decided_at"], on["triggers"], on["values"]) == (13, {"blowup": True}, {"nonfinite(field)": 2.0})
    assert (off["decided_at"], off["triggers"]) == (16, {"blowup": False})
    analysed = sorted(run.values["max"])
    assert analysed == sorted({0, 10, 20, *range(on["step"], off["step"])})
    assert all(math.isnan(run.values["max"][s]) for s in analysed if 13 <= s < 16), "the analytics see the NaN"
    for step in (13, 14, 15):  # rank 0 says it in the simulation's output, with the step
        assert f"array 'field' step {step}: 2 non-finite values (NaN or Inf)" in run.output
    assert "step 16: " not in run.output

    summary = run_summary(run.session, None, None, [], 1.0)
    assert summary["ok"] and summary["nonfinite"] == {
        "field": {"steps": 3, "values": 6, "first_step": 13, "last_step": 15}
    }
    warning = "array 'field': 6 non-finite value(s) (NaN or Inf) in 3 step(s), steps 13 to 15"
    assert warning in summary["warnings"] and f"? {warning}" in format_summary(summary)


RATE_CONTRACT = """
arrays:
  field: {dtype: float64, shape: [8, 8]}
cadence: {every: 10}
monitors:
  - {array: field, reductions: [max]}
triggers:
  - name: heating
    when: rate(max(field)) > 500
    action: {cadence: {every: 1}}
analytics:
  - {function: max, arrays: [field]}
"""


def test_a_rate_trigger_fires_in_the_simulation_at_the_jump(ray_cluster: Any) -> None:
    """max(field) = step + 7007 rises by 1 per step (10 per time unit, dt 0.1), and by 100 more at step 12."""
    sim = [sys.executable, str(SIM), "--shape", "8,8", "--steps", "30", "--bump", "12:20:100"]
    run = run_coupled(RATE_CONTRACT, sim, nranks=2)
    assert run.returncode == 0, run.output
    on, off = run.session.provenance.records
    assert (on["decided_at"], on["source"], on["triggers"]) == (12, "monitor:heating", {"heating": True})
    assert on["values"] == {"max(field)": 7119.0, "prev(max(field))": 7018.0}  # rate (7119 - 7018) / 0.1
    assert (off["decided_at"], off["triggers"]) == (13, {"heating": False}), "back to 10 per time unit"
    assert sorted(run.values["max"]) == [0, 10, 13, 20]


def test_a_delta_trigger_in_the_analytics_reads_the_previous_analysed_step(ray_cluster: Any) -> None:
    """No monitor: the analytics evaluate delta(max(field)) on the copied steps, 0, 5, 10, 15, ...

    The decision reaches the ranks a few steps later (feedback: async): the steps slow down so it does.
    """
    contract = RATE_CONTRACT.replace("monitors:\n  - {array: field, reductions: [max]}\n", "")
    contract = contract.replace("every: 10}", "every: 5}").replace("rate(max(field)) > 500", "delta(max(field)) > 50")
    sim = [sys.executable, str(SIM), "--shape", "8,8", "--steps", "60", "--bump", "12:60:100", "--sleep", "0.02"]
    run = run_coupled(contract, sim, nranks=2)
    assert run.returncode == 0, run.output
    first = run.session.provenance.records[0]
    assert (first["decided_at"], first["triggers"]) == (15, {"heating": True})
    assert first["values"] == {"max(field)": 7122.0, "prev(max(field))": 7017.0}, "steps 15 and 10"


ACTIONS_CONTRACT = """
arrays:
  field: {dtype: float64, shape: [8, 8]}
cadence: {every: 2}
monitors:
  - {array: field, reductions: [max]}
triggers:
  - name: hot
    when: max(field) > 7100
    until: max(field) < 7050
    action: {analytics: [hot_mean]}
  - name: hot_once
    when: max(field) > 7100
    until: max(field) < 7050
    action: {analytics: [snapshot], once: true}
analytics:
  - {function: max, arrays: [field]}
  - {function: mean, name: hot_mean, arrays: [field]}
  - {function: max, name: snapshot, arrays: [field]}
"""


def test_trigger_actions_run_analytics_only_while_active_and_once(ray_cluster: Any) -> None:
    """max(field) = step + 7007, +100 at steps 10-15: both triggers fire at 10 and release at 16 (applied at
    the next step), so they are active on steps 11 to 16; the cadence (every 2) does not change."""
    sim = [sys.executable, str(SIM), "--shape", "8,8", "--steps", "30", "--bump", "10:16:100"]
    run = run_coupled(ACTIONS_CONTRACT, sim, nranks=2)
    assert run.returncode == 0, run.output
    assert sorted(run.values["max"]) == list(range(0, 30, 2)), "the other analytics and the cadence: unchanged"
    assert run.values["hot_mean"] == {s: s + 3503.5 + 100 * (s < 16) for s in (12, 14, 16)}
    assert run.values["snapshot"] == {12: 12 + 7007.0 + 100}, "once: the first copied step after it fired"
    records = run.session.provenance.records
    changes = [r for r in records if r["kind"] == "change"]
    assert [(r["step"], r["decided_at"], r["triggers"]) for r in changes] == [
        (11, 10, {"hot": True, "hot_once": True}),
        (17, 16, {"hot": False, "hot_once": False}),
    ]
    assert all(r["changes"] == [] for r in changes), "no cadence in these actions"
    actions = [(r["step"], r["analytic"], r["triggers"], r["once"]) for r in records if r["kind"] == "action"]
    assert actions == [
        (12, "hot_mean", ["hot"], False),
        (12, "snapshot", ["hot_once"], True),
        (14, "hot_mean", ["hot"], False),
        (16, "hot_mean", ["hot"], False),
    ]


ZOOM_CONTRACT = """
arrays:
  field: {dtype: float64, shape: [8, 8], dims: [y, x]}
  zone:
    of: field
    select: {y: {start: 4, stop: 8}, x: {start: 2, stop: 6}}
    cadence: {never: true}
cadence: {every: 10}
monitors:
  - {array: field, reductions: [max]}
triggers:
  - name: heating
    when: rate(max(field)) > 500
    until: delta(max(field)) < 0
    action:
      cadence: {every: 1}
      arrays: [zone]
analytics:
  - {function: max, arrays: [field]}
  - {function: max, name: zone_max, arrays: [zone]}
"""


def test_a_view_zooms_on_a_region_at_every_step_while_a_trigger_holds(ray_cluster: Any) -> None:
    """field = step + 1000 y + x (+100 from step 12 to 19) on 2 ranks (rows 0-3, 4-7); the zone is rows 4-7,
    columns 2-5: rank 1's only. The trigger fires at 12 and releases at 20, each applied at the next step."""
    sim = [sys.executable, str(SIM), "--shape", "8,8", "--steps", "30", "--bump", "12:20:100"]
    run = run_coupled(ZOOM_CONTRACT, sim, nranks=2)
    assert run.returncode == 0, run.output
    on, off = run.session.provenance.records
    assert (on["decided_at"], off["decided_at"]) == (12, 20) and on["arrays"] == ["zone"]
    assert run.values["max"] == {s: s + 7007.0 for s in (0, 10, 20)}, "the array itself: its own cadence"
    assert run.values["zone_max"] == {s: s + 7005.0 + 100 * (s < 20) for s in range(13, 21)}, "the region only"
    stats = [json.loads(run.output.split(f"rank {r} done ")[1].splitlines()[0]) for r in (0, 1)]
    assert [s["published"] for s in stats] == [3, 3 + 8], "rank 0 holds none of the zone"
    assert stats[0]["not_selected"] == 8 and stats[1]["bytes_copied"] == 3 * 4 * 8 * 8 + 8 * 4 * 4 * 8

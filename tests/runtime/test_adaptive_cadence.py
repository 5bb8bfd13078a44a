"""Adaptive cadence on 4 MPI ranks: triggers, monitors, steering values, provenance (issue 4)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from doreisa.analytics import Registry
from doreisa.testing import run_coupled

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

SIM = Path(__file__).parent / "sims" / "fill.py"
BASE_MAX = 7007  # max of the 8x8 fill pattern at step 0: 1000 * 7 + 7


def sim(*args: str) -> list[str]:
    return [sys.executable, str(SIM), "--shape", "8,8", *args]


def trigger_contract(mode: str, *, base: int = 10, fast: int = 2, monitors: str = "", extra: str = "") -> str:
    return f"""
arrays:
  field: {{dtype: float64, shape: [8, 8]{extra}}}
cadence: {{every: {base}}}
feedback: {{mode: {mode}, lag: 2}}
timeouts: {{connect: 30, step: 30, block: 60}}
{monitors}
triggers:
  - name: bump
    when: max(field) > {BASE_MAX + 400}
    until: max(field) < {BASE_MAX + 100}
    action: {{cadence: {{every: {fast}}}, arrays: [field]}}
analytics:
  - function: max
    arrays: [field]
"""


def test_deterministic_mode_analyses_exactly_the_same_steps_every_run(ray_cluster: Any, tmp_path: Path) -> None:
    # bump on steps [30, 60): seen at analysed step 30 -> every 2 from 32; gone at 60 -> every 10 from 62
    expected = [0, 10, 20, 30, *range(32, 61, 2), 70, 80, 90]
    runs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        run = run_coupled(
            trigger_contract("deterministic"), sim("--steps", "100", "--bump", "30:60:500"), nranks=4, output=out
        )
        assert run.returncode == 0, run.output
        assert sorted(run.values["max"]) == expected
        runs.append([json.loads(line) for line in (out / "provenance.jsonl").read_text().splitlines()])
    on, off = runs[0]
    assert (on["step"], on["decided_at"], on["triggers"], on["arrays"]) == (32, 30, {"bump": True}, ["field"])
    assert on["changes"] == [{"array": "field", "old": {"every": 10, "start": 0.0}, "new": {"every": 2, "start": 0.0}}]
    assert on["values"] == {"max(field)": BASE_MAX + 30 + 500}
    assert (off["step"], off["decided_at"], off["triggers"]) == (62, 60, {"bump": False})
    assert off["values"] == {"max(field)": BASE_MAX + 60}
    assert runs[0] == runs[1]


def test_async_mode_switches_soon_after_the_event_and_never_waits(ray_cluster: Any) -> None:
    run = run_coupled(
        trigger_contract("async"), sim("--steps", "100", "--bump", "30:60:500", "--sleep", "0.02"), nranks=4
    )
    assert run.returncode == 0, run.output
    steps = sorted(run.values["max"])
    assert steps[:4] == [0, 10, 20, 30]
    on, off = (r for r in run.session.provenance.records if r["kind"] == "change")
    # asynchronous: decided on the first analysed step that saw the event, applied by every rank
    # at the first step after the decision reached rank 0 (no bound on when: the simulation never waits)
    assert (on["decided_at"], on["triggers"]) == (30, {"bump": True}) and on["step"] > 30
    assert off["triggers"] == {"bump": False} and 60 <= off["decided_at"] < off["step"]
    fast = [s for s in steps if on["step"] <= s < off["step"]]
    assert fast == list(range(on["step"] + on["step"] % 2, off["step"], 2)), "every 2 while active"
    assert [s for s in steps if s < on["step"] or s >= off["step"]] == [
        s for s in range(0, 100, 10) if s < on["step"] or s >= off["step"]
    ]
    assert run.session.state.lost_steps == []
    assert len({s.published for s in run.session.state.closed.values()}) == 1


def test_no_partial_step_under_a_trigger_that_flips_every_few_steps(ray_cluster: Any) -> None:
    bumps = [arg for lo in range(5, 120, 8) for arg in ("--bump", f"{lo}:{lo + 4}:500")]
    run = run_coupled(trigger_contract("async", base=3, fast=1), sim("--steps", "120", *bumps), nranks=4)
    assert run.returncode == 0, run.output
    changes = [r for r in run.session.provenance.records if r["kind"] == "change"]
    assert len(changes) >= 6, "the trigger flipped many times"
    assert run.session.state.lost_steps == []
    published = {s.published for s in run.session.state.closed.values()}
    assert len(published) == 1 and published.pop() == len(run.values["max"])


def test_monitor_catches_an_event_between_cadence_points(ray_cluster: Any) -> None:
    monitors = "monitors:\n  - {array: field, reductions: [max, mean]}"
    text = trigger_contract("async", base=50, fast=1, monitors=monitors)
    run = run_coupled(text, sim("--steps", "100", "--bump", "33:38:500"), nranks=4)
    assert run.returncode == 0, run.output
    # seen by the monitor at step 33 (no analysed step near it), applied from 34, released at 38 -> from 39
    assert sorted(run.values["max"]) == [0, 34, 35, 36, 37, 38, 50]
    monitor = run.values["monitor:max(field)"]
    assert sorted(monitor) == list(range(100))
    assert monitor[33] == BASE_MAX + 33 + 500 and monitor[40] == BASE_MAX + 40
    assert run.values["monitor:mean(field)"][0] == pytest.approx(3503.5)


def test_trigger_on_a_region_that_is_never_copied(ray_cluster: Any) -> None:
    # only rows 0-3 are copied; the monitor reads rows 4-7, where the event is
    monitors = "monitors:\n  - {array: field, reductions: [max], select: [{start: 4}, {}]}"
    text = trigger_contract("async", base=50, fast=1, monitors=monitors, extra=", select: [{stop: 4}, {}]")
    run = run_coupled(text, sim("--steps", "60", "--bump", "20:22:500"), nranks=4)
    assert run.returncode == 0, run.output
    assert sorted(run.values["max"]) == [0, 21, 22, 50]
    assert run.values["max"][0] == 3007, "the analytics see only rows 0-3"
    assert run.values["monitor:max(field)"][20] == BASE_MAX + 20 + 500


def test_steering_values_reach_every_rank_at_the_same_step_in_order(ray_cluster: Any, tmp_path: Path) -> None:
    registry = Registry()

    @registry.analytic("steer")
    def steer(x: Any, *, step: int, feedback: Any) -> Any:
        feedback.send(last=step, dt=0.5 + step)
        return x.sum()

    text = """
arrays:
  field: {dtype: float64, shape: [8, 8]}
cadence: {every: 5}
feedback: {enabled: true, mode: deterministic, lag: 3}
timeouts: {connect: 30, step: 30, block: 60}
analytics:
  - function: steer
    arrays: [field]
"""
    run = run_coupled(text, sim("--steps", "40", "--feedback-log", str(tmp_path)), nranks=4, registry=registry)
    assert run.returncode == 0, run.output
    logs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    assert logs[0] == logs[1] == logs[2] == logs[3]
    for step, values in logs[0]:
        decided = [t for t in range(0, 40, 5) if t + 3 <= step]
        assert values == ({"last": decided[-1], "dt": 0.5 + decided[-1]} if decided else {}), step
    steering = [r for r in run.session.provenance.records if r["kind"] == "change"]
    assert [r["steering"]["last"] for r in steering] == list(range(0, 40, 5))
    assert all(r["step"] == r["decided_at"] + 3 for r in steering)


def test_priority_decides_between_active_triggers(ray_cluster: Any) -> None:
    text = f"""
arrays:
  field: {{dtype: float64, shape: [8, 8]}}
cadence: {{every: 10}}
monitors:
  - {{array: field, reductions: [max]}}
triggers:
  - name: warm
    when: max(field) > {BASE_MAX + 400}
    action: {{cadence: {{every: 2}}}}
    priority: 1
  - name: hot
    when: max(field) > {BASE_MAX + 1200}
    action: {{cadence: {{every: 1}}}}
    priority: 5
timeouts: {{connect: 30, step: 30}}
analytics:
  - function: max
    arrays: [field]
"""
    run = run_coupled(text, sim("--steps", "60", "--bump", "20:40:500", "--bump", "25:30:1000"), nranks=4)
    assert run.returncode == 0, run.output
    # warm from 21 (every 2), hot on top from 26 to 30 (every 1), warm again from 31, base from 41
    assert sorted(run.values["max"]) == [0, 10, 20, 22, 24, 26, 27, 28, 29, 30, 32, 34, 36, 38, 40, 50]
    changes = [(r["step"], r["triggers"]) for r in run.session.provenance.records if r["kind"] == "change"]
    assert changes == [(21, {"warm": True}), (26, {"hot": True}), (31, {"hot": False}), (41, {"warm": False})]


def test_triggers_work_with_a_simulation_time_cadence(ray_cluster: Any) -> None:
    text = f"""
arrays:
  field: {{dtype: float64, shape: [8, 8]}}
cadence: {{every_time: 2.0}}
monitors:
  - {{array: field, reductions: [max]}}
triggers:
  - name: bump
    when: max(field) > {BASE_MAX + 400}
    action: {{cadence: {{every_time: 0.5}}}}
timeouts: {{connect: 30, step: 30}}
analytics:
  - function: max
    arrays: [field]
"""
    # dt = 0.1: t = step / 10; the bump covers t in [3.0, 5.0)
    run = run_coupled(text, sim("--steps", "90", "--dt", "0.1", "--bump", "30:50:500"), nranks=4)
    assert run.returncode == 0, run.output
    # every 2.0 of time: t = 0, 2; every 0.5 from step 31 (t = 3.5, 4.0, 4.5, 5.0); every 2.0 from 51: t = 6, 8
    assert sorted(run.values["max"]) == [0, 20, 35, 40, 45, 50, 60, 80]

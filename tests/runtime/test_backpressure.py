"""Backpressure with analytics slower than the simulation (RELIABILITY L3), and start order (L5)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from doreisa.analytics import Registry
from doreisa.contract import parse_contract
from doreisa.runtime.cluster.session import Session
from doreisa.testing import mpiexec, run_coupled

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

SIM = Path(__file__).parent / "sims" / "fill.py"


def slow_registry(delay: float) -> Registry:
    registry = Registry()

    @registry.analytic("slow_sum")
    def slow_sum(x: Any) -> Any:
        time.sleep(delay)
        return x.sum()

    return registry


def contract(policy: str, k: int) -> str:
    return f"""
arrays:
  field: {{dtype: float64, shape: [8, 8]}}
cadence: {{every: 1}}
backpressure: {{max_in_flight: {k}, policy: {policy}}}
timeouts: {{connect: 30, step: 30}}
analytics:
  - function: slow_sum
    arrays: [field]
"""


def test_block_keeps_the_simulation_at_most_k_steps_ahead(ray_cluster: Any) -> None:
    run = run_coupled(
        contract("block", 2),
        [sys.executable, str(SIM), "--steps", "15", "--shape", "8,8", "--sleep", "0.01"],
        nranks=2,
        registry=slow_registry(0.2),
    )
    assert run.returncode == 0, run.output
    assert sorted(run.values["slow_sum"]) == list(range(15)), "block policy delivers every step"
    for stats in run.session.state.closed.values():
        assert stats.skipped == 0 and stats.dropped == 0
        assert 1 <= stats.max_in_flight <= 2


def test_skip_counts_skipped_steps_and_never_delivers_half_a_step(ray_cluster: Any) -> None:
    run = run_coupled(
        contract("skip", 1),
        [sys.executable, str(SIM), "--steps", "30", "--shape", "8,8", "--sleep", "0.01"],
        nranks=2,
        registry=slow_registry(0.2),
    )
    assert run.returncode == 0, run.output
    stats = list(run.session.state.closed.values())
    skipped = [tuple(map(tuple, s.skipped_steps)) for s in stats]
    assert skipped[0] == skipped[1], "every rank skips the same steps"
    assert stats[0].skipped > 0
    analysed = set(run.values["slow_sum"])
    assert analysed.isdisjoint(step for _, step in skipped[0])
    assert len(analysed) + stats[0].skipped == 30, "each step is analysed or counted as skipped"
    assert run.session.state.lost_steps == []
    assert all(s.max_in_flight <= 1 for s in stats)


def test_simulation_may_start_before_the_analytics(ray_cluster: Any, tmp_path: Path) -> None:
    text = contract("block", 4).replace("slow_sum", "sum")
    run_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"dr-{os.getpid()}"
    session = Session(parse_contract(text), run_dir=run_dir)
    env = {**os.environ, **session.env}
    proc = subprocess.Popen(
        [mpiexec(), "-n", "2", sys.executable, str(SIM), "--steps", "6", "--shape", "8,8"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(3)  # the ranks wait for the node actors
        assert proc.poll() is None
        session.start()
        session.serve(2, alive=lambda: proc.poll() is None)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        session.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    assert proc.returncode == 0, out
    assert sorted(session.results.values["sum"]) == list(range(6))


LATEST = """
arrays:
  field: {dtype: float64, shape: [8, 8]}
cadence: {every: 1}
backpressure: {max_in_flight: 1, policy: latest}
analytics:
  - {function: slow_max_latest, arrays: [field]}
"""


SLOW = Registry()


@SLOW.analytic("slow_max_latest")
def _slow_max(x: Any) -> Any:
    time.sleep(0.3)  # a visualization far slower than the simulation
    return x.max()


def test_policy_latest_analyses_the_newest_whole_steps_and_never_makes_the_simulation_wait(ray_cluster: Any) -> None:
    run = run_coupled(LATEST, [sys.executable, str(SIM), "--shape", "8,8", "--steps", "30"], nranks=2, registry=SLOW)
    assert run.returncode == 0, run.output
    analysed = sorted(run.values["slow_max_latest"])
    superseded = sorted(step for _, step in run.session.state.dropped_latest)
    assert sorted(analysed + superseded) == list(range(30)), "every step is analysed or said superseded, once"
    assert superseded and 29 in analysed, "the newest step is always analysed; older waiting ones give way"
    assert all(run.values["slow_max_latest"][s] == s + 7007 for s in analysed), "whole steps only"
    skipped = [(r["step"], r["source"]) for r in run.session.provenance.records if r["kind"] == "skipped"]
    assert skipped == [(s, "latest") for s in superseded]
    for rank in (0, 1):  # every step was copied: none skipped or dropped at the ranks
        stats = json.loads(run.output.split(f"rank {rank} done ")[1].splitlines()[0])
        assert (stats["published"], stats["skipped"], stats["dropped"]) == (30, 0, 0)

"""Load (L) and fault (F) cases of the reliability matrix that no other test covers (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from doreisa.runtime.store import size
from doreisa.testing import process_tree, run_coupled

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

SIM = Path(__file__).parents[1] / "runtime" / "sims" / "fill.py"


def test_L6_the_first_step_need_not_be_0_and_windows_fill_from_the_first_one_seen(ray_cluster: Any) -> None:
    """The simulation starts at step 3 (a restart): nothing assumes 0; a 2-step window is full at the 2nd copy."""
    contract = """
arrays:
  field: {dtype: float64, shape: [8, 8], window: 2}
cadence: {every: 2}
analytics:
  - {function: max, arrays: [field]}
  - {function: time_derivative, arrays: [field]}
"""
    sim = [sys.executable, str(SIM), "--shape", "8,8", "--first-step", "3", "--steps", "10", "--dt", "0.5"]
    run = run_coupled(contract, sim, nranks=2)
    assert run.returncode == 0, run.output
    assert run.values["max"] == {s: s + 7007.0 for s in (4, 6, 8, 10, 12)}, "the steps the cadence wants, from 3 on"
    assert run.values["time_derivative"] == {s: pytest.approx(2.0) for s in (6, 8, 10, 12)}, "from the 2nd copy"


def test_F7_a_rank_that_dies_mid_run_is_named_and_no_half_step_is_analysed(ray_cluster: Any) -> None:
    """Rank 1 of 4 exits abruptly at step 6 (MPI then ends the others): the run ends, rank 1 is among the lost
    (which node actor sees its rank go first is a race when MPI ends the others at once), every step
    analysed is whole, and a step some ranks had sent is reported lost with who sent it."""
    contract = """
arrays:
  field: {dtype: float64, shape: [8, 8]}
cadence: {every: 1}
timeouts: {connect: 60, step: 20}
analytics:
  - {function: max, arrays: [field]}
"""
    sim = [sys.executable, str(SIM), "--shape", "8,8", "--steps", "20", "--die-at", "6", "--sleep", "0.05"]
    run = run_coupled(contract, sim, nranks=4)
    assert run.returncode != 0, "the simulation failed, and says so"
    state = run.session.state
    assert 1 in state.lost_order
    analysed = run.values["max"]
    assert set(analysed) <= set(range(6)) and analysed == {s: s + 7007.0 for s in analysed}, "whole steps only"
    assert set(range(5)) <= set(analysed), "the steps before the death are analysed"
    for lost in state.lost_steps:  # steps other ranks had sent: lost, naming who sent what
        assert lost.step >= 5 and 1 not in lost.ranks_seen and lost.have < lost.expected == 4


def test_L8_a_node_whose_blocks_in_flight_cannot_fit_its_store_says_so_and_values_stay_right(ray_cluster: Any) -> None:
    """The store is not over-committed on purpose (that would spill this machine's shared Ray): a tiny
    ``max_store_fraction`` makes 2 ranks x 4 steps of 4 KiB 'too much', which the node actor reports once, with
    its store's real size, in the run's warnings; the ranks warn of their own blocks; the analysis goes on."""
    import ray

    contract = """
arrays:
  field: {dtype: float64, shape: [16, 32]}
cadence: {every: 1}
backpressure: {max_in_flight: 4, max_store_fraction: 0.000001}
analytics:
  - {function: max, arrays: [field]}
"""
    sim = [sys.executable, str(SIM), "--shape", "16,32", "--steps", "6"]
    run = run_coupled(contract, sim, nranks=2)
    assert run.returncode == 0, run.output
    assert run.values["max"] == {s: s + 15031.0 for s in range(6)}
    stores = {n["NodeID"][:8]: n["Resources"]["object_store_memory"] for n in ray.nodes() if n["Alive"]}
    state = run.session.state
    nodes = {node[:8] for node in state.hello.values()}
    assert len(state.warnings) == len(nodes), "once per node actor with ranks"
    for warning in state.warnings:
        # said when the first ring that crosses the budget opens: the first of the node's ranks' rings
        node = warning.removeprefix("node ")[:8]
        assert node in nodes and f"over 1e-06 of its object store ({size(stores[node])};" in warning, warning
        assert "this node's 1 rank(s) in flight can reach 8.0 KiB ('field' 2.0 KiB x 4 steps)" in warning, warning
    assert "rank 0: a block of 'field' is 2.0 KiB, over 1e-06" in run.output, "the ranks say it too"


def test_F12_the_ray_head_nodes_gcs_killed_mid_run_ends_the_run_with_a_summary(tmp_path: Path) -> None:
    """``kill -9`` of the GCS of a ``doreisa run``'s private Ray, mid-run. Ray alone ends every process of
    the cluster a minute later, the driver too, without a summary and leaving its temporary folder; the run
    notices in seconds, stops its actors and Ray, writes a summary that says why, and leaves nothing behind."""
    contract = tmp_path / "contract.yaml"
    contract.write_text("arrays:\n  field: {dtype: float64, shape: [8, 8]}\ncadence: {every: 2}\n")
    contract.write_text(contract.read_text() + "analytics:\n  - {function: max, arrays: [field]}\n")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "doreisa.cli", "run", str(contract), "--np", "2", "--output", str(out), "--quiet"]
    argv += ["--", sys.executable, str(SIM), "--shape", "8,8", "--steps", "3000", "--sleep", "0.05"]
    before = set(Path("/tmp").glob("dray-*"))
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        gcs = _wait_for(lambda: _gcs_once_analysed(run.pid, out / "results.csv"), timeout=120)
        os.kill(gcs, signal.SIGKILL)
        killed = time.monotonic()
        output, _ = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False
    assert re.match(r"the Ray head node's GCS at 127\.0\.0\.1:\d+ is gone \(10 connections refused", summary["error"])
    assert summary["steps_analysed"]["field"] >= 1, "what was analysed before is kept"
    assert "Traceback" not in output
    assert set(Path("/tmp").glob("dray-*")) - before == set(), "Ray's temporary folder is removed"
    # the simulation runs 150 s: it was ended after the analytics, once its grace (30 s) was over
    assert time.monotonic() - killed < 120


def _gcs_once_analysed(root: int, results: Path) -> int | None:
    """The GCS of the run under ``root``, once it has recorded results (a row per line, flushed); None before."""
    if not results.exists() or len(results.read_text().splitlines()) < 3:
        return None
    return next((pid for pid, command in process_tree(root).items() if "gcs_server" in command.split(" ")[0]), None)


def _wait_for(found: Callable[[], int | None], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value is not None:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not found within {timeout} s")

"""Load (L) and fault (F) cases of the reliability matrix that no other test covers (docs/reliability.md)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from doreisa.analytics import Registry
from doreisa.runtime.store import size
from doreisa.testing import (
    free_port,
    mpiexec,
    process_tree,
    routable_address,
    run_coupled,
    store_back_to,
    store_stats,
)

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

T = TypeVar("T")
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
    before = store_stats()
    run = run_coupled(contract, sim, nranks=4)
    assert run.returncode != 0, "the simulation failed, and says so"
    after = store_back_to(before)
    assert after["objects"] <= before["objects"], f"the partial steps' blocks are released: {before} -> {after}"
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


@pytest.mark.slow
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


def _wait_for(found: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value is not None:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not found within {timeout} s")


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_F5_F6_ray_nodes_removed_mid_run_without_ranks_the_run_goes_on_with_ranks_it_ends_naming_them(
    tmp_path: Path,
) -> None:
    """A Ray cluster of four nodes started with ``ray start`` (each in its own session), ``doreisa run
    --address`` on it with 2 ranks: the ranks pick the first two node actors (by node id), the others serve
    none; the node of the driver and the head actor (said in doreisa.log) is never killed. Killed
    mid-run (``kill -9`` of a node's processes): first a node without ranks (F6: the run goes on,
    with a warning; analytics' parts are only soft-pinned, so Ray may run them elsewhere), then a node with a
    rank (F5). Measured before the watch on node actors: the session never learnt of a lost node, and the
    other rank's steps were lost one ``timeouts.step`` after another. Now the run ends within seconds, naming
    the node actor and the rank it served, with a summary; the simulation goes on without analytics."""
    try:
        host = routable_address()
    except OSError:
        pytest.skip("no routable address")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {
        "HOME": str(tmp_path),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": "f5" * 16,
    }
    temps = [tempfile.mkdtemp(prefix="dr-", dir="/tmp") for _ in range(4)]  # short: Ray's socket paths
    common = ["--block", f"--node-ip-address={host}", "--num-cpus=1", "--object-store-memory=100000000"]
    nodes: dict[str, subprocess.Popen[bytes]] = {}  # the node's temporary folder -> its `ray start`
    try:
        head = ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temps[0]}"]
        nodes[temps[0]] = _ray_start([*common, *head], env)
        _wait_for(lambda: _node_ids(host, port, env, 1), timeout=120)
        for temp in temps[1:]:  # the others together
            nodes[temp] = _ray_start([*common, f"--address={host}:{port}", f"--temp-dir={temp}"], env)
        _wait_for(lambda: _node_ids(host, port, env, len(temps)), timeout=180)
        ids = _node_ids(host, port, env, len(nodes)) or {}
        by_id = {node_id: nodes[temp] for node_id, temp in ids.items()}
        contract = tmp_path / "contract.yaml"
        contract.write_text(
            "arrays:\n  field: {dtype: float64, shape: [8, 8]}\ncadence: {every: 2}\ntimeouts: {step: 60}\n"
            "analytics:\n  - {function: max, arrays: [field]}\n"
        )
        out = tmp_path / "out"
        argv = [sys.executable, "-m", "doreisa.cli", "run", str(contract), "--address", f"{host}:{port}", "--np", "2"]
        argv += ["--output", str(out), "--quiet", "--", sys.executable, str(SIM), "--shape", "8,8", "--steps", "1200"]
        run = subprocess.Popen([*argv, "--sleep", "0.05"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            _wait_for(lambda: _rows(out / "results.csv", 3), timeout=120)
            # the ranks' node actors: the first two by node id (discovery.py: the local_index-th of those sorted);
            # of four nodes, one with a rank and one without are not the node of the driver and the head actor
            driver = re.search(r"driver and head actor on node (\w{8})", (out / "doreisa.log").read_text())
            assert driver is not None
            ranked, rankless = sorted(by_id)[:2], sorted(by_id)[2:]
            with_rank = next(n for n in reversed(ranked) if not n.startswith(driver[1]))
            without = next(n for n in rankless if not n.startswith(driver[1]))
            rank = ranked.index(with_rank)
            os.killpg(by_id[without].pid, signal.SIGKILL)  # its raylet, store, workers, node actor
            _wait_for(lambda: _said(out / "doreisa.log", f"node {without[:8]} died"), timeout=120)
            rows = len((out / "results.csv").read_text().splitlines())
            _wait_for(lambda: _rows(out / "results.csv", rows + 10), timeout=120)  # F6: the analysis goes on
            assert run.poll() is None, "the run goes on"
            os.killpg(by_id[with_rank].pid, signal.SIGKILL)
            killed = time.monotonic()
            output = run.communicate(timeout=240)[0].decode(errors="replace")
        finally:
            if run.poll() is None:
                run.kill()
    finally:
        for node in nodes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=60)
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)
    assert run.returncode == 1, output
    summary = json.loads((out / "summary.json").read_text())
    assert re.match(
        rf"the node actor on node {with_rank[:8]} died: .*; ranks \[{rank}\] sent their blocks to it", summary["error"]
    ), summary["error"]
    assert any(w.startswith(f"the node actor on node {without[:8]} died") for w in summary["warnings"]), summary
    assert summary["steps_analysed"]["field"] >= 13, "what was analysed before is kept"
    assert "Traceback" not in output
    assert time.monotonic() - killed < 100, "ended in seconds (plus the simulation's grace), not a timeouts.step a step"


TRANSIT_LOSS = """
import json, os, subprocess, sys, time

from doreisa.testing import local_cluster, mpiexec, store_back_to, store_stats

FAST = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 100, "health_check_failure_threshold": 10}
CONTRACT = '''
arrays:
  field: {dtype: float64, shape: [256, 256]}
placement: {mode: in_transit}
timeouts: {connect: 60, step: 30}
analytics:
  - {function: max, arrays: [field]}
'''
analytics = {"doreisa_analytics": 1}
with local_cluster(2, node_resources={0: analytics, 1: analytics}, system_config=FAST) as cluster:
    from doreisa.contract import parse_contract
    from doreisa.runtime.cluster.session import Session

    before = store_stats()
    session = Session(parse_contract(CONTRACT), keep_results=True)
    session.start()
    sim = [sys.executable, sys.argv[1], "--shape", "256,256", "--steps", "150", "--sleep", "0.05"]
    proc = subprocess.Popen([mpiexec(), "-n", "2", *sim], env={**os.environ, **session.env})
    error, victim = "", ""
    try:
        deadline = time.monotonic() + 120
        while len(session.results.values.get("max", {})) < 20 and time.monotonic() < deadline:
            session.poll(timeout=0.1)
        node = [n for n in cluster.list_all_nodes() if n is not cluster.head_node][1]
        victim = node.node_id
        cluster.remove_node(node, allow_graceful=False)
        try:
            session.serve(2, alive=lambda: proc.poll() is None)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        proc.wait(timeout=120)
    finally:
        session.stop()
        proc.kill()
    print("RESULT " + json.dumps({
        "victim": victim,
        "error": error,
        "returncode": proc.returncode,
        "analysed": session.results.values.get("max", {}),
        "lost": [[s.step, s.reason] for s in session.state.lost_steps],
        "failed": sum(f.count for f in session.driver.failures),
        "warnings": session.state.warnings,
        "store": [before, store_back_to(before)],
    }))
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_F5_in_transit_an_analytics_node_lost_mid_run_its_steps_are_reported_lost_and_the_others_go_on(
    tmp_path: Path,
) -> None:
    """In transit, with two analytics nodes (a Ray cluster of its own, with fast health checks: the node's
    death is seen in about a second): one is removed mid-run. Its transit actor is named in a warning, the
    node actors relay to the other from then on, and the run goes on to the end. A step whose blocks were on
    the lost node is reported lost with that reason (never analysed half), or, if the analytics were already
    reading it, its analytic failure is reported: every step is analysed, lost or failed, none missing."""
    script = tmp_path / "transit_loss.py"
    script.write_text(TRANSIT_LOSS)
    done = subprocess.run(
        [sys.executable, str(script), str(SIM)], capture_output=True, text=True, timeout=280, cwd=tmp_path
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["error"] == "" and result["returncode"] == 0, result
    analysed = {int(s): v for s, v in result["analysed"].items()}
    assert analysed == {s: s + 255255.0 for s in analysed}, "whole and exact steps only"
    lost = {step for step, _ in result["lost"]}
    assert {reason for _, reason in result["lost"]} <= {"its blocks were on an analytics node that was lost"}
    assert not lost & set(analysed), "a step reported lost is never analysed"
    assert len(analysed) + len(lost) + result["failed"] == 150, "every step analysed, lost or failed"
    assert set(range(100, 150)) <= set(analysed), "later steps go to the other analytics node"
    assert any(w.startswith(f"the transit actor on node {result['victim'][:8]} died") for w in result["warnings"])
    before, after = result["store"]
    assert after["objects"] <= before["objects"], f"the blocks on the live nodes are released: {before} -> {after}"


def _ray_start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    ray = Path(sys.executable).parent / "ray"
    return subprocess.Popen(
        [str(ray), "start", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _node_ids(host: str, port: int, env: dict[str, str], count: int) -> dict[str, str] | None:
    """Once the cluster at ``host:port`` has ``count`` alive nodes: node id -> its temporary folder; None before.

    Asked in a child process (one Ray per process), from where each node keeps its object store's socket.
    """
    code = (
        f"import ray, json; ray.init(address='{host}:{port}'); "
        "print(json.dumps({n['NodeID']: n['ObjectStoreSocketName'] for n in ray.nodes() if n['Alive']}))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return None
    stores: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    if len(stores) != count:
        return None
    return {node_id: "/".join(socket.split("/")[:3]) for node_id, socket in stores.items()}


def _said(log: Path, text: str) -> bool | None:
    return True if log.exists() and text in log.read_text() else None


def _rows(path: Path, count: int) -> int | None:
    return count if path.exists() and len(path.read_text().splitlines()) > count else None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_L1_16_ranks_in_a_2d_grid_every_step_whole_and_exact_each_block_once(ray_cluster: Any) -> None:
    """16 ranks (oversubscribed on this machine) in a 4x4 grid of 64x64 blocks, 20 steps: every array the
    analytics see equals the reference, and each (rank, step) was copied and stored exactly once."""
    registry = Registry()
    registry.analytic("whole")(_whole)
    contract = """
arrays:
  field: {dtype: float64, shape: [256, 256]}
cadence: {every: 1}
timeouts: {connect: 300, step: 300}
analytics:
  - {function: whole, arrays: [field]}
"""
    sim = [sys.executable, str(SIM), "--shape", "256,256", "--grid", "4,4", "--steps", "20"]
    run = run_coupled(contract, sim, nranks=16, registry=registry, timeout=300)
    assert run.returncode == 0, run.output
    assert sorted(run.values["whole"]) == list(range(20))
    i, j = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    for step, got in run.values["whole"].items():
        np.testing.assert_array_equal(got, step + 1000.0 * i + j, err_msg=f"step {step}")
    closed = run.session.state.closed
    assert sorted(closed) == list(range(16)) and {s.published for s in closed.values()} == {20}
    assert sum(c.blocks for c in run.session.last_node_counts) == 16 * 20, "each (rank, step) once"
    assert run.session.state.lost_steps == [] and run.session.driver.failures == []


def _whole(x: Any) -> Any:
    return x


def _run_on_own_head(
    tmp_path: Path, ray_args: list[str], ray_env: dict[str, str], contract: str, analytics: str, sim: list[str]
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``doreisa run --address`` with 2 ranks of ``fill.py`` (``sim``: its arguments) on a one-node Ray started
    here with ``ray start --head`` (``ray_args``, ``ray_env``: its settings), stopped whatever happens."""
    port, temp = free_port(), tempfile.mkdtemp(prefix="dr-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {
        "HOME": str(tmp_path),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": "own" * 11,
    }
    head = ["--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=false"]
    ray = _ray_start([*head, f"--temp-dir={temp}", *ray_args], env | ray_env)
    try:
        _wait_for(lambda: _node_ids("127.0.0.1", port, env, 1), timeout=120)
        (tmp_path / "contract.yaml").write_text(contract)
        (tmp_path / "own_analytics.py").write_text(analytics)
        out = tmp_path / "out"
        argv = [sys.executable, "-m", "doreisa.cli", "run", str(tmp_path / "contract.yaml"), "--np", "2"]
        argv += ["--address", f"127.0.0.1:{port}", "--output", str(out), "--quiet"]
        argv += ["--analytics", str(tmp_path / "own_analytics.py"), "--", sys.executable, str(SIM), *sim]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=360), out
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ray.pid, signal.SIGKILL)
        ray.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


SLOW_MAX = """
import time

import doreisa


@doreisa.analytic("slow_max")
def slow_max(field):
    time.sleep(1.0)  # the steps pile up in the object store meanwhile
    return field.max()
"""


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_F10_a_full_object_store_and_spill_disk_are_named_counted_and_never_hold_the_simulation(tmp_path: Path) -> None:
    """A Ray head whose object store (80 MB) spills to a 24 MiB tmpfs; 2 ranks publish 8 MiB per step, every
    step wanted, while a slow analytic lets the steps pile up. Once the store and the disk are full Ray refuses
    the node actor's puts (``OutOfDiskError``). Measured before: a RankError per block (100 for 60 steps),
    and the run's error was "1 step(s) lost (incomplete)". Now the first refusal is reported once per node,
    naming the step, the ranks and what to do; every block refused is counted (``blocks_not_stored``); that
    is the run's error; the simulation is never held and ends normally."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a small tmpfs for Ray's spill folder)")
    spill = Path(tempfile.mkdtemp(prefix="dr-spill-", dir="/tmp"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(spill)], capture_output=True)
    if mounted.returncode != 0:
        shutil.rmtree(spill, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    spilling = {"type": "filesystem", "params": {"directory_path": str(spill)}}
    config = json.dumps({"object_spilling_config": json.dumps(spilling)})
    try:
        run, out = _run_on_own_head(
            tmp_path,
            ["--num-cpus=1", "--object-store-memory=80000000", f"--system-config={config}"],
            {},
            "arrays:\n  field: {dtype: float64, shape: [1024, 1024]}\n"
            "backpressure: {max_in_flight: 64, max_store_fraction: 1.0}\ntimeouts: {step: 10}\n"
            "analytics:\n  - {function: slow_max, arrays: [field]}\n",
            SLOW_MAX,
            ["--shape", "1024,1024", "--steps", "40", "--sleep", "0.05"],
        )
    finally:
        subprocess.run(["umount", "-l", str(spill)], capture_output=True)
        shutil.rmtree(spill, ignore_errors=True)
    assert run.returncode == 1, run.stdout + run.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["simulation_exit_code"] == 0, "the simulation never noticed"
    assert all(stats["published"] == 40 for stats in summary["per_rank"].values()), summary["per_rank"]
    refused = summary["blocks_not_stored"]
    assert refused >= 2, summary
    assert summary["blocks_published"] + refused == 80, "every block taken is stored or counted as refused"
    assert re.match(
        rf"{refused} block\(s\) could not be stored in Ray's object store: node \w{{8}} could not store the blocks "
        r"of 'field' at step \d+ from ranks \[(0|1|0, 1)\] \((OutOfDiskError|ObjectStoreFullError): .*"
        r"give Ray a larger store",
        summary["error"],
    ), summary["error"]
    assert sum("could not store" in e["error"] for e in summary["errors"]) == 1, "said once, then counted"
    assert summary["steps_analysed"]["field"] >= 1, "the steps stored before were analysed"
    assert "Traceback" not in run.stderr


def _analysed_steps(field: Any, *, step: int) -> Any:
    _analysed.append(step)  # the driver calls it in this process
    return field.max()


_analysed: list[int] = []


def test_F3_a_head_actor_killed_and_restarted_by_ray_is_rebuilt_from_the_node_actors_every_step_analysed_once(
    ray_cluster: Any,
) -> None:
    """The head actor is killed mid-run with restarts allowed (``ray.kill(head, no_restart=False)``): Ray
    restarts it empty, the session rebuilds its state from the node actors (the blocks of the steps not yet
    analysed, the events not yet taken), and the run goes on to the end: every step of the simulation is
    analysed exactly once, in order, with the right value, none lost, and the summary's warnings say so.
    Killed twice, to check a second rebuild too: by Ray, then with SIGKILL of its process."""
    import ray

    from doreisa.contract import parse_contract
    from doreisa.runtime.cluster.session import Session

    registry = Registry()
    registry.analytic("steps")(_analysed_steps)
    contract = "arrays:\n  field: {dtype: float64, shape: [8, 8]}\nanalytics:\n  - {function: steps, arrays: [field]}\n"
    before = store_stats()
    session = Session(parse_contract(contract), registry=registry, keep_results=True)
    session.start()
    _analysed.clear()
    argv = [sys.executable, str(SIM), "--shape", "8,8", "--steps", "60", "--sleep", "0.05"]
    proc = subprocess.Popen([mpiexec(), "-n", "2", *argv], env={**os.environ, **session.env}, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        for kill_at in (5, 15):
            while len(_analysed) < kill_at:
                assert time.monotonic() < deadline, f"{kill_at} steps analysed within 120 s"
                session.poll(timeout=0.1)
            if kill_at == 5:
                ray.kill(session._head, no_restart=False)
            else:
                # the test session's Ray cluster runs below this process
                (pid,) = [p for p, cmd in process_tree(os.getpid()).items() if cmd.startswith("ray::HeadState")]
                os.kill(pid, signal.SIGKILL)
        session.serve(2, alive=lambda: proc.poll() is None)
        proc.wait(timeout=120)
    finally:
        problems = session.stop()
        proc.kill()
    assert proc.returncode == 0
    assert problems == []
    assert _analysed == list(range(60)), "every step once, in order, none lost"
    assert session.results.values["steps"] == {s: s + 7007.0 for s in range(60)}
    assert session.state.lost_steps == [] and session.state.errors == []
    rebuilt = [w for w in session.state.warnings if w.startswith("the head actor was restarted")]
    assert len(rebuilt) == 2, session.state.warnings
    after = store_back_to(before)
    assert after["objects"] <= before["objects"], f"no block kept for a rebuild outlives the run: {before} -> {after}"


HOG = """
import numpy as np

import doreisa


def _hog(block, step):
    if step >= 3:  # from the 4th analysed step: allocate until Ray kills the task (at most 6 GiB, then give up)
        held = [np.ones(16 << 20) for _ in range(48)]  # 128 MiB each, touched
        del held
    return block


@doreisa.analytic("hog")
def hog(field, *, steps):
    return field.map_blocks(_hog, steps[-1], dtype=field.dtype).max()
"""


def _memory_in_use() -> float:
    """The share of this machine's memory in use, as Ray's memory monitor reads it."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    total, available = (int(info[k].split()[0]) for k in ("MemTotal", "MemAvailable"))
    return (total - available) / total


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.skipif(
    os.environ.get("DOREISA_OOM_TEST") != "1", reason="opt-in (DOREISA_OOM_TEST=1): fills this machine's memory"
)
def test_F11_an_analytic_that_exhausts_memory_is_killed_by_ray_reported_and_the_simulation_goes_on(
    tmp_path: Path,
) -> None:
    """A Ray head whose memory monitor kills workers above the memory in use now + 15 % of the machine; an
    analytic allocates up to 6 GiB in its task from the 4th analysed step. Ray kills the task, then, as the
    memory stays high, more workers: doreisa's actors among them (its policy does not spare them). The run
    ends with a summary naming the memory kill, the analytic's failure is reported with its step, and the
    simulation never notices."""
    monitor = {"RAY_memory_usage_threshold": f"{_memory_in_use() + 0.15:.3f}", "RAY_memory_monitor_refresh_ms": "100"}
    run, out = _run_on_own_head(
        tmp_path,
        ["--num-cpus=2", "--object-store-memory=200000000"],
        monitor,
        "arrays:\n  field: {dtype: float64, shape: [1024, 512]}\nanalytics:\n  - {function: hog, arrays: [field]}\n",
        HOG,
        ["--shape", "1024,512", "--steps", "30", "--sleep", "0.1"],
    )
    assert run.returncode == 1, run.stdout + run.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["simulation_exit_code"] == 0, "the simulation never noticed"
    assert "running low on memory" in summary["error"], summary["error"]
    assert summary["steps_analysed"]["field"] >= 3, "the steps analysed before are kept"
    failed = [f for f in summary["analytic_failures"] if f["analytic"] == "hog"]
    assert failed and failed[0]["step"] >= 3, summary["analytic_failures"]
    assert "Traceback" not in run.stderr

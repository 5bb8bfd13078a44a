"""`doreisa run` as a user runs it: its own local Ray, mpiexec, files in --output."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.mpi, pytest.mark.slow]

SIM = Path(__file__).parent / "sims" / "fill.py"

CONTRACT = """
arrays:
  field: {dtype: float64, shape: [12, 12], window: 2}
cadence: {every: 4}
timeouts: {connect: 60, step: 60}
analytics:
  - function: mean
    arrays: [field]
  - function: doubled_max
    arrays: [field]
  - function: histogram
    arrays: [field]
    params: {bins: 4, lo: 0.0, hi: 12000.0}
"""

ANALYTICS = """
import json, os, sys
import doreisa

def _record_auth():  # a local run uses a token of its own, readable by its owner only
    path = os.environ["RAY_AUTH_TOKEN_PATH"]
    out = sys.argv[sys.argv.index("--output") + 1]
    auth = {"mode": os.environ["RAY_AUTH_MODE"], "token_path": path, "file_mode": oct(os.stat(path).st_mode & 0o777),
            "folder_mode": oct(os.stat(os.path.dirname(path)).st_mode & 0o777)}
    with open(os.path.join(out, "auth.json"), "w") as f:
        json.dump(auth, f)

@doreisa.analytic("doubled_max")
def doubled_max(x, *, step):
    if step == 0:
        _record_auth()
    if step == FAIL_AT:
        raise RuntimeError("failing on purpose")
    return 2 * x.max()
"""


KILL_HEAD = """
import ray
import doreisa
from doreisa.runtime._names import HEAD_ACTOR

@doreisa.analytic("doubled_max")
def doubled_max(x, *, step):
    if step == 4:  # the head actor dies mid-run, as with `kill -9` of ray::HeadState
        for actor in ray.util.list_named_actors(all_namespaces=True):
            if actor["name"].startswith(HEAD_ACTOR):
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
    return 2 * x.max()
"""


def doreisa_run(
    tmp_path: Path, fail_at: int, analytics_source: str = ANALYTICS, options: tuple[str, ...] = ()
) -> tuple[subprocess.CompletedProcess[str], Path]:
    contract = tmp_path / "contract.yaml"
    contract.write_text(CONTRACT)
    analytics = tmp_path / "my_analytics.py"
    analytics.write_text(analytics_source.replace("FAIL_AT", str(fail_at)))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "doreisa.cli",
        "run",
        str(contract),
        "--np",
        "2",
        "--output",
        str(out),
        "--analytics",
        str(analytics),
        *options,
        "--",
        sys.executable,
        str(SIM),
        "--steps",
        "10",
        "--shape",
        "12,12",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300), out


def test_doreisa_run_writes_results_summary_and_contract(tmp_path: Path) -> None:
    proc, out = doreisa_run(tmp_path, fail_at=-1, options=("--report",))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((out / "results.csv").open()))
    by = {(r["analytic"], int(r["step"])): r for r in rows}
    assert {k[1] for k in by} == {0, 4, 8}
    assert float(by[("doubled_max", 8)]["value"]) == 2 * (8 + 11 * 1000 + 11)
    hist = by[("histogram", 4)]
    assert hist["value"] == "" and hist["file"] == "arrays/histogram/step_00000004.npy"
    import numpy as np

    assert np.load(out / hist["file"]).sum() == 144
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    assert summary["steps_analysed"] == {"field": 3}
    assert summary["blocks_published"] == 6
    assert 0 < summary["first_result_s"] < summary["wall_s"], "launch -> first result, within the run"
    assert f"(first result after {summary['first_result_s']:.1f} s)" in proc.stderr
    assert (out / "contract.yaml").read_text() == CONTRACT
    assert "doreisa run summary" in proc.stderr
    cost = summary["cost"]  # what the analysis cost, measured: the Ray nodes' processes, the driver, the ranks
    assert cost["ray_nodes_cpu_s"] > 0 and cost["driver_cpu_s"] > 0 and cost["publish_s"] > 0
    assert cost["energy_wh"] > 0 and cost["co2_g"] > 0 and cost["watts_per_core"] == 10.0
    assert all(stats["publish_s"] > 0 for stats in summary["per_rank"].values())
    assert "cost (estimate)" in proc.stderr
    page = (out / "report.html").read_text()  # --report
    assert f"report: {out / 'report.html'}" in proc.stderr and page.count("<img") >= 3 and "doubled_max" in page
    auth = json.loads((out / "auth.json").read_text())  # what the analytics process saw during the run
    assert auth["mode"] == "token" and auth["file_mode"] == "0o600" and auth["folder_mode"] == "0o700"
    assert auth["token_path"].startswith("/tmp/dray-") and not Path(auth["token_path"]).exists(), "removed with the run"


def test_failing_analytic_makes_the_run_fail_with_a_summary(tmp_path: Path) -> None:
    proc, out = doreisa_run(tmp_path, fail_at=4)
    assert proc.returncode == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False
    (failure,) = summary["analytic_failures"]
    assert failure["analytic"] == "doubled_max" and failure["step"] == 4
    assert "RuntimeError: failing on purpose" in failure["error"]
    assert "doubled_max at step 4: RuntimeError: failing on purpose" in proc.stderr
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(int(r["step"]) for r in rows if r["analytic"] == "doubled_max") == [0, 8]


def _temporary_folders() -> set[Path]:
    """Ray's temporary folders of `doreisa run` and its run folders (not the test cluster's)."""
    return {p for p in Path("/tmp").glob("d*") if p.name.startswith(("dray-", "doreisa-")) and "cluster" not in p.name}


def test_a_dead_head_actor_ends_the_run_with_a_summary_and_nothing_left_behind(tmp_path: Path) -> None:
    before = _temporary_folders()
    proc, out = doreisa_run(tmp_path, -1, KILL_HEAD)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False
    assert summary["error"].startswith("the head actor died"), summary["error"]
    assert "Traceback" not in proc.stderr
    assert "error" in proc.stderr and "the head actor died" in proc.stderr  # in the end-of-run table
    assert _temporary_folders() - before == set()
    assert summary["simulation_exit_code"] == 0, "the ranks detach from the analytics and the simulation ends"


def test_bad_contract_fails_before_anything_starts(tmp_path: Path) -> None:
    contract = tmp_path / "bad.yaml"
    contract.write_text("arrays:\n  field: {dtype: float64, shape: [4], windw: 2}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "doreisa.cli", "run", str(contract), "--output", str(tmp_path / "o"), "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert f"{contract}:2:" in proc.stderr and "windw" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_rank_stuck_before_its_first_publish_is_named_and_the_run_ends(tmp_path: Path) -> None:
    contract = tmp_path / "contract.yaml"
    contract.write_text(CONTRACT.replace("timeouts: {connect: 60, step: 60}", "timeouts: {connect: 60, step: 3}"))
    analytics = tmp_path / "my_analytics.py"
    analytics.write_text(ANALYTICS.replace("FAIL_AT", "-1"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "doreisa.cli", "run", str(contract), "--np", "2", "--output", str(out), "--quiet"]
    cmd += ["--analytics", str(analytics), "--", sys.executable, str(SIM), "--steps", "4", "--shape", "12,12"]
    cmd += ["--hang", "1:120"]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - started < 100, "the stalled simulation is ended, not waited for"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["error"].startswith("ranks [1] never called publish('field') while ranks [0] have waited")
    assert summary["simulation_exit_code"] != 0


def _started(cmd: list[str], out: Path) -> subprocess.Popen[str]:
    """``doreisa run`` started in the background; returns once its first result is recorded."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "results.csv").exists() or len((out / "results.csv").read_text().splitlines()) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no result within 120 s"
        time.sleep(0.2)
    return proc


def test_sigterm_ends_the_run_with_a_summary_and_nothing_left_behind(tmp_path: Path) -> None:
    contract = tmp_path / "contract.yaml"
    contract.write_text(CONTRACT.replace("  - function: doubled_max\n    arrays: [field]\n", ""))
    out = tmp_path / "out"
    before = _temporary_folders()
    cmd = [sys.executable, "-m", "doreisa.cli", "run", str(contract), "--np", "2", "--output", str(out), "--quiet"]
    cmd += ["--", sys.executable, str(SIM), "--steps", "100000", "--shape", "12,12", "--sleep", "0.01"]
    proc = _started(cmd, out)
    proc.terminate()  # what a batch system sends at the end of a job's time
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + 15, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["ok"], summary["error"]) == (False, "interrupted (SIGTERM)")
    assert summary["steps_analysed"]["field"] >= 1
    assert _temporary_folders() - before == set()


HANGS = """
import time
import doreisa

@doreisa.analytic("stuck")
def stuck(x, *, step):
    if step == 4:
        time.sleep(3600)  # never returns in the run's time
    return x.max()
"""


def test_a_hung_analytic_is_abandoned_and_the_others_go_on(tmp_path: Path) -> None:
    contract = tmp_path / "contract.yaml"
    text = CONTRACT.replace("doubled_max", "stuck").replace("timeouts: {connect: 60, step: 60}", "")
    contract.write_text(text + "timeouts: {connect: 60, step: 60, analytic: 3}\n")
    analytics = tmp_path / "hangs.py"
    analytics.write_text(HANGS)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "doreisa.cli", "run", str(contract), "--np", "2", "--output", str(out)]
    cmd += ["--analytics", str(analytics), "--", sys.executable, str(SIM), "--steps", "12", "--shape", "12,12"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    (failure,) = summary["analytic_failures"]
    assert (failure["analytic"], failure["step"], failure["count"]) == ("stuck", 4, 1)
    assert failure["error"] == "TimeoutError: stuck at step 4 ran longer than timeouts.analytic = 3 s; abandoned"
    rows = list(csv.DictReader((out / "results.csv").open()))
    steps = {a: sorted(int(r["step"]) for r in rows if r["analytic"] == a) for a in ("mean", "stuck", "histogram")}
    assert steps == {"mean": [0, 4, 8], "stuck": [0, 8], "histogram": [0, 4, 8]}, "the others, and later steps, go on"


OWN_FUNCTIONS = """
import numpy as np

import doreisa


def _shifted(block):  # defined here: Ray's workers cannot import this file
    return block + 1.0


@doreisa.analytic("shifted_max")
def shifted_max(field):
    return field.map_blocks(_shifted, dtype=field.dtype).max()
"""


def test_an_analytics_files_own_functions_run_on_ray_workers(tmp_path: Path) -> None:
    """Blocks of 2 x 2 MiB: the analytic's parts run as Ray tasks (the driver runs only graphs of at most
    1 MiB of blocks itself), on workers where the analytics file, loaded by path, is not importable.
    Before, they failed with ``No module named 'own'``; the file's functions now travel by value."""
    contract = tmp_path / "contract.yaml"
    contract.write_text(
        "arrays:\n  field: {dtype: float64, shape: [1024, 512]}\ncadence: {every: 2}\n"
        "analytics:\n  - {function: shifted_max, arrays: [field]}\n"
    )
    (tmp_path / "own.py").write_text(OWN_FUNCTIONS)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "doreisa.cli", "run", str(contract), "--np", "2", "--output", str(out)]
    cmd += ["--analytics", str(tmp_path / "own.py"), "--quiet", "--"]
    cmd += [sys.executable, str(SIM), "--steps", "6", "--shape", "1024,512"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {int(r["step"]): float(r["value"]) for r in csv.DictReader((out / "results.csv").open())}
    assert rows == {s: s + 1000.0 * 1023 + 511 + 1 for s in (0, 2, 4)}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["graphs"]["cut"] >= 1 and summary["analytic_failures"] == []

"""What a user waits for (issue #17): launch to the first analysed result, and the whole run.

Each figure is a real ``doreisa run`` as a user types it (a private Ray started by the run, 4
MPI ranks, the summary written, Ray stopped), timed from this process's ``Popen``:

- ``first_result_s``: the heat demo, until ``results.csv`` holds its first row (the csv sink
  writes each row as it comes), against a bare ``ray.init()`` in a fresh interpreter (its
  import and start, timed the same way: from ``Popen`` to "ready"), the least any Ray-based
  tool waits before its first result;
- ``whole_run_s``: the peers' dense-C256 scenario (4 ranks x one 256x256 block, 100 steps, the
  global mean of every step: ``sim_bench.py steps``) from launch to exit, compared with each
  peer's total for the same scenario (``c_total_wall_s``: its whole script, Ray's start and stop
  included) in ``comparisons.py``.

Runs before the suite's own Ray starts: two Rays on two cores would time each other.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import Entry, judged

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FIRST_RESULT_RATIO = 1.5
BARE_INIT = (
    "import ray, sys\n"
    "ray.init(num_cpus=2, include_dashboard=False, logging_level='ERROR', _temp_dir=sys.argv[1])\n"
    "print('ready', flush=True)\n"
    "ray.shutdown()\n"
)
DENSE_CONTRACT = """
arrays:
  field: {dtype: float64, shape: [512, 512], block: [256, 256]}
cadence: {every: 1}
analytics:
  - function: mean
    arrays: [field]
"""


def bare_ray_init_s() -> float:
    """``Popen`` of a fresh interpreter to ``ray.init()`` returned."""
    with tempfile.TemporaryDirectory(prefix="dbench-init-", dir="/tmp") as temp:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", BARE_INIT, temp], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        ready = time.monotonic() - started
        proc.communicate(timeout=120)
    if line.strip() != "ready":
        raise RuntimeError(f"a bare ray.init failed (exit {proc.returncode})")
    return ready


def doreisa_run(contract: Path, command: list[str], analytics: list[str]) -> dict[str, Any]:
    """One ``doreisa run`` on 4 ranks: launch to first row of results.csv, launch to exit, its summary."""
    with tempfile.TemporaryDirectory(prefix="dbench-run-") as tmp:
        out = Path(tmp) / "out"
        argv = [str(BIN / "doreisa"), "run", str(contract), "--np", "4", "--output", str(out), "--quiet"]
        argv += [arg for module in analytics for arg in ("--analytics", module)] + ["--", *command]
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        first, table = None, out / "results.csv"
        while proc.poll() is None:
            if first is None and table.exists() and table.read_text().count("\n") >= 2:
                first = time.monotonic() - started
            time.sleep(0.005)
        wall = time.monotonic() - started
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"doreisa run failed (exit {proc.returncode}): {err[-2000:]}")
        summary = json.loads((out / "summary.json").read_text())
    return {"first_result_s": first, "wall_s": wall, "summary": summary}


def entries(raw: dict[str, Any], runs: int) -> list[Entry]:
    """The heat demo's first result against a bare ray.init, and the dense-C256 run (for comparisons.py)."""
    inits: list[float] = []
    heat: list[dict[str, Any]] = []
    for _ in range(runs):  # interleaved: the machine's load moves within minutes
        inits.append(bare_ray_init_s())
        heat.append(
            doreisa_run(
                ROOT / "examples" / "heat" / "contract.yaml",
                ["python", "examples/heat/simulation.py"],
                ["examples/heat/analytics.py"],
            )
        )
    with tempfile.TemporaryDirectory(prefix="dbench-dense-") as tmp:
        contract = Path(tmp) / "dense.yaml"
        contract.write_text(DENSE_CONTRACT)
        outdir = Path(tmp) / "ranks"
        outdir.mkdir()
        sim = ["python", str(ROOT / "benchmarks" / "sim_bench.py"), "steps", "--chunk", "256", "--steps", "100"]
        dense = [doreisa_run(contract, [*sim, "--outdir", str(outdir)], []) for _ in range(runs)]
    raw["launch"] = {"bare_ray_init_s": inits, "heat": heat, "dense-C256": dense}
    init = statistics.median(inits)
    first = statistics.median(r["first_result_s"] for r in heat)
    entry = Entry(
        "first_result_s",
        first,
        "s",
        reference=init,
        target=f"ratio <= {FIRST_RESULT_RATIO:g} (a bare ray.init)",
        params={
            "runs": runs,
            "heat_wall_s": round(statistics.median(r["wall_s"] for r in heat), 2),
            "first_result_in_summary_s": [r["summary"]["first_result_s"] for r in heat],
            "bare_ray_init_runs_s": [round(v, 3) for v in inits],
        },
        notes="doreisa run of the heat demo (4 ranks, private Ray): Popen -> first row of results.csv, against "
        "Popen of a fresh interpreter -> ray.init() returned (medians); first_result_in_summary_s: the same "
        "from doreisa run's own start (summary.json), without the interpreter's start",
    )
    return [judged(entry, ratio_at_most=FIRST_RESULT_RATIO)]

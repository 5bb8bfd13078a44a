"""The peer baselines (doreisa 0.3.4, deisa-ray 0.1.8, deisa-dask 0.6.3), run in the same benchmark run.

The peers' scripts live in ``shared/peers`` beside the repository and run in their own
Python 3.12 venvs (``$PEERS``, default ``~/peers``). Nothing of them is copied here: this
module only invokes them with ``--json`` and reads what they write.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from bench_common import med

REPO = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(os.environ.get("DOREISA_PEER_SCRIPTS", REPO.parent / "shared" / "peers"))
VENVS = Path(os.environ.get("PEERS", Path.home() / "peers"))


class Peer(NamedTuple):
    """How to run one peer: its venv, its script and the flags that pin what was measured.

    A peer's script defaults may change with the script; the flags keep the configuration of
    shared/peers/README.md's headline table whatever they become.
    """

    venv: str  # folder under VENVS
    script: str  # in PEERS_DIR
    flags: tuple[str, ...] = ()  # added to every run: the configuration shared/peers/README.md measured


PEERS = {
    "doreisa-0.3.4": Peer("doreisa", "bench_doreisa.py"),
    "deisa-ray-0.1.8": Peer("deisaray", "bench_deisaray.py"),
    # The start gate (the analytics release the ranks once subscribed, over deisa-dask's own feedback
    # channel): without it 0.6.3 loses the steps sent before register() reaches the scheduler. The
    # cluster is the scheduler + 2 workers x 1 thread of its getting-started example, as child processes.
    "deisa-dask-0.6.3": Peer("deisadask", "bench_deisadask.py", ("--start-gate", "feedback", "--cluster", "cli")),
}

SETUP = """\
PY="env PYENV_VERSION=3.12.1 python3.12"   # CPython 3.12
PEERS={venvs}
$PY -m venv $PEERS/doreisa
$PEERS/doreisa/bin/pip install --upgrade pip
$PEERS/doreisa/bin/pip install "doreisa==0.3.4" "ray[default]==2.46.0" "pandas==2.2.3" "pyarrow==20.0.0"
$PY -m venv $PEERS/deisaray
$PEERS/deisaray/bin/pip install --upgrade pip
$PEERS/deisaray/bin/pip install deisa-ray==0.1.8
$PEERS/deisaray/bin/pip install mpich
$PY -m venv $PEERS/deisadask
$PEERS/deisadask/bin/pip install --upgrade pip
$PEERS/deisadask/bin/pip install deisa-dask==0.6.3 mpich
$PEERS/deisadask/bin/pip install mpi4py  # deisa-dask's [mpi] extra, not pulled"""

#: The scenarios of shared/peers/README.md's headline table that the comparisons need.
SCENARIOS = {
    "dense-C256": ["--chunk", "256"],
    "dense-C16": ["--chunk", "16"],
    "sparse-C256": ["--chunk", "256", "--every", "10"],
}
#: Runs of a scenario, on each side, whose per-run figures are compared by their median (as in
#: shared/peers/README.md): a mean step cost over 100 short steps on 2 shared cores is made by the
#: one or two steps that the OS preempted for milliseconds, which one run alone cannot average out.
REPEATS = {"sparse-C256": 3}


def python_of(peer: str) -> Path:
    """The interpreter of a peer's venv."""
    return VENVS / PEERS[peer].venv / "bin" / "python"


def missing() -> list[str]:
    """Peers whose venv or script is not there."""
    return [p for p, spec in PEERS.items() if not python_of(p).exists() or not (PEERS_DIR / spec.script).exists()]


def setup_help() -> str:
    """What to run to create the peers' venvs (shared/peers/README.md)."""
    return SETUP.format(venvs=VENVS)


def run_peer(peer: str, scenario: str, *, ranks: int = 4, iterations: int = 100, timeout: int = 170) -> dict[str, Any]:
    """One run of a peer's script; its JSON record (``status`` says whether it worked)."""
    script = PEERS_DIR / PEERS[peer].script
    with tempfile.TemporaryDirectory(prefix="dbench-peer-") as tmp:
        out = Path(tmp) / "result.jsonl"
        argv = [str(python_of(peer)), str(script), "--ranks", str(ranks), "--iterations", str(iterations)]
        argv += [*SCENARIOS[scenario], *PEERS[peer].flags]
        argv += ["--timeout", str(timeout), "--json", str(out), "--label", scenario]
        proc = subprocess.Popen(
            argv, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            log, _ = proc.communicate(timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group of the child we started, by its id
            log, _ = proc.communicate()
        lines = out.read_text().splitlines() if out.exists() else []
    if not lines:
        return {"status": "error", "error": f"no result (exit {proc.returncode}): {log[-1500:]}"}
    return json.loads(lines[-1])


def service_ms(record: dict[str, Any], warmup: int = 10) -> float | None:
    """Median per-step analytics service time from a peer's raw timeline.

    For each callback t: end(t) - max(end of the callback that ended before it, rank 0's send
    start of t). With a backlog (deisa-ray) this is the callback period; when the analytics
    wait for data it is the time from the data to the end of the callback. Same definition as
    ours.
    """
    times = service_times(record, warmup)
    return 1e3 * med(times) if times else None


def service_mean_ms(record: dict[str, Any], warmup: int = 10) -> float | None:
    """Mean of the same service times: the throughput figure of a peer whose callbacks overlap.

    deisa-dask runs up to 6 callbacks at once, which end in bursts: the median gap between
    completions is then much shorter than the time per callback that the mean shows.
    """
    times = service_times(record, warmup)
    return 1e3 * sum(times) / len(times) if times else None


def service_times(record: dict[str, Any], warmup: int = 10) -> list[float]:
    """Per-step service times in seconds, callbacks taken in the order they *ended*.

    The same as step order when callbacks run one after the other (ours, the Ray peers); in
    step order, deisa-dask's concurrent callbacks (~30 of 100 end out of order) would give
    negative times.
    """
    raw = record.get("raw") or {}
    callbacks = sorted(raw.get("callbacks") or [], key=lambda cb: cb[2])
    starts = raw.get("rank0_send_start") or []
    out = []
    for (_, _, prev_end, _), (t, _, end, _) in itertools.pairwise(callbacks):
        if t >= warmup and t < len(starts):
            out.append(end - max(prev_end, starts[t]))
    return out

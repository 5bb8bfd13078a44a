"""doreisa's side of the benchmarks: coupled runs of ``sim_bench.py`` against a live Session.

Needs a connected Ray (``run.py`` starts a private one). Every function returns plain data;
``run.py`` turns it into report entries.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import descendants, med, pctl, proc_table, rss_mb, shm_mb

from doreisa.analytics import Registry, default_registry
from doreisa.contract import parse_contract
from doreisa.runtime.cluster.session import Session
from doreisa.testing import mpiexec

SIM = Path(__file__).resolve().parent / "sim_bench.py"
WARMUP = 10  # first steps left out of per-step statistics, as the peers' scripts do


@dataclass
class Coupled:
    """What one coupled run left: rank outputs, result times and values, counts."""

    ranks: list[dict[str, Any]]
    result_time: dict[int, float] = field(default_factory=dict[int, float])
    values: dict[int, Any] = field(default_factory=dict[int, Any])
    returncode: int = 0
    output: str = ""
    wall_s: float = 0.0
    node_counts: list[Any] = field(default_factory=list[Any])  # NodeCounts records
    # per step: its latest block seen and stored by its node actor, complete at the head, taken by the driver
    hops: dict[int, tuple[float, float, float, float]] = field(default_factory=dict[int, tuple[float, ...]])


def contract(
    shape: tuple[int, ...], block: tuple[int, ...], *, every: int, in_flight: int = 4, analytic: bool = True
) -> str:
    """A one-array contract; with ``analytic`` the global mean of every wanted step."""
    text = f"""
arrays:
  field: {{dtype: float64, shape: {list(shape)}, block: {list(block)}}}
cadence: {{every: {every}}}
backpressure: {{max_in_flight: {in_flight}, policy: block}}
timeouts: {{connect: 60, step: 60}}
"""
    return text + ("analytics:\n  - function: mean\n    arrays: [field]\n" if analytic else "")


def coupled(
    text: str,
    sim_args: list[str],
    *,
    nranks: int,
    registry: Registry = default_registry,
    timeout: float = 300,
    sampler: Any = None,
    program: list[str] | None = None,
) -> Coupled:
    """Run ``sim_bench.py`` (or ``program``) on ``nranks`` MPI ranks against a fresh Session; time each result."""
    session = Session(parse_contract(text), registry=registry)
    session.start()
    times: dict[int, float] = {}
    record = session.results.record

    def timed_record(analytic: str, step: int, tm: float | None, value: Any) -> None:
        times[step] = time.time()
        record(analytic, step, tm, value)

    session.results.record = timed_record  # type: ignore[method-assign]
    hops: dict[int, tuple[float, float, float, float]] = {}
    deliver = session.driver.deliver

    def timed_deliver(step: Any) -> None:
        hops[step.step] = (*step.hops, time.time())
        deliver(step)

    session.driver.deliver = timed_deliver  # type: ignore[method-assign]
    outdir = tempfile.mkdtemp(prefix="dbench-out-")
    argv = [mpiexec(), "-n", str(nranks), *(program or [sys.executable, str(SIM)]), *sim_args, "--outdir", outdir]
    env = {**os.environ, **session.env}
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stacks: list[str] = []
    watchdog = threading.Timer(timeout, _hung, args=(proc, stacks))
    watchdog.start()
    if sampler is not None:
        sampler.attach(session)
    try:
        session.serve(nranks, alive=lambda: proc.poll() is None)
        out, _ = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            out, _ = proc.communicate()
        if sampler is not None:
            sampler.detach()
        session.stop()
    run = Coupled(_read_ranks(outdir, nranks), times, dict(session.results.values.get("mean", {})))
    run.returncode, run.output, run.wall_s = proc.returncode, out, time.monotonic() - started
    run.node_counts = session.last_node_counts
    run.hops = hops
    shutil.rmtree(outdir, ignore_errors=True)
    if proc.returncode != 0 or len(run.ranks) != nranks:
        hung = f" after the {timeout:g} s timeout; rank stacks:\n" + "\n".join(stacks) if stacks else ""
        raise RuntimeError(f"simulation failed (exit {proc.returncode}){hung}\n{out[-3000:]}")
    return run


def _hung(proc: subprocess.Popen[str], stacks: list[str]) -> None:
    """Timeout: keep the ranks' Python stacks (py-spy, if installed), then end our processes by PID."""
    table = proc_table()
    pids = sorted(descendants(proc.pid, table) - {proc.pid})
    spy = Path(sys.executable).parent / "py-spy"
    for pid in pids:
        if spy.exists() and "sim_bench.py" in table.get(pid, (0, 0, ""))[2]:
            dump = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30)
            stacks.append(dump.stdout[-4000:])
    for pid in [*reversed(pids), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _read_ranks(outdir: str, nranks: int) -> list[dict[str, Any]]:
    ranks = []
    for r in range(nranks):
        path = Path(outdir) / f"rank{r}.json"
        if path.exists():
            ranks.append(json.loads(path.read_text()))
    return ranks


# -- the scenarios ----------------------------------------------------------------------


def publish_skip(*, calls: int, profile: bool) -> dict[str, Any]:
    """Cost of publish for an unwanted step, timed in one rank (mpiexec -n 1)."""
    text = contract((16, 16), (16, 16), every=10**9, analytic=False)
    args = ["skip", "--calls", str(calls), *(["--profile"] if profile else [])]
    return coupled(text, args, nranks=1).ranks[0]


def publish_monitor(*, calls: int, ranks: int = 2) -> dict[str, Any]:
    """Cost of publish for an unwanted step when a monitor reduces every step (max + one allgather)."""
    text = contract((16 * ranks, 16), (16, 16), every=10**9, analytic=False)
    text += "monitors:\n  - array: field\n    reductions: [max]\n"
    return coupled(text, ["skip", "--calls", str(calls)], nranks=ranks).ranks[0]


COPY_SIZES = {"b64k": (64, 128), "b1m": (512, 256), "b8m": (1024, 1024), "b64m": (4096, 2048)}


def publish_copy(*, reps: int, budget_bytes: float, profile: bool, timeout: float = 300) -> dict[str, Any]:
    """publish of a wanted block vs np.copyto and block.copy(), one array per block size."""
    arrays = "\n".join(
        f"  {name}: {{dtype: float64, shape: {list(shape)}, block: {list(shape)}}}"
        for name, shape in COPY_SIZES.items()
    )
    text = f"arrays:\n{arrays}\ncadence: {{every: 1}}\nbackpressure: {{max_in_flight: 1000000}}\n"
    args = ["copy", "--reps", str(reps), "--budget-bytes", str(budget_bytes), *(["--profile"] if profile else [])]
    return coupled(text, args, nranks=1, timeout=timeout).ranks[0]


def native_publish(program: Path, *, calls: int, reps: int) -> dict[str, Any]:
    """The C API's publish (benchmarks/native_bench.c): unwanted steps, and wanted blocks vs memcpy."""
    text = "arrays:\n  skip: {dtype: float64, shape: [16, 16], cadence: {every: 1000000000}}\n"
    text += "".join(f"  {name}: {{dtype: float64, shape: {list(COPY_SIZES[name])}}}\n" for name in ("b64k", "b1m"))
    text += "cadence: {every: 1}\nbackpressure: {max_in_flight: 1000000}\n"
    args = ["--calls", str(calls), "--reps", str(reps)]
    return coupled(text, args, nranks=1, program=[str(program)]).ranks[0]


def grid_for(ranks: int) -> tuple[int, int]:
    """2-D rank grid (rows, cols), as square as possible."""
    rows = int(ranks**0.5)
    while ranks % rows:
        rows -= 1
    return rows, ranks // rows


def stepped(
    *, ranks: int, chunk: int, steps: int, every: int = 1, sleep: float = 0.0, in_flight: int = 4, sampler: Any = None
) -> dict[str, Any]:
    """R ranks x one C x C block each, global mean of every wanted step; per-step statistics."""
    rows, cols = grid_for(ranks)
    text = contract((rows * chunk, cols * chunk), (chunk, chunk), every=every, in_flight=in_flight)
    args = ["steps", "--chunk", str(chunk), "--steps", str(steps), "--sleep", str(sleep)]
    run = coupled(text, args, nranks=ranks, timeout=120 + steps * (sleep + 0.5), sampler=sampler)
    return step_stats(run, ranks=ranks, steps=steps, every=every)


def step_stats(run: Coupled, *, ranks: int, steps: int, every: int) -> dict[str, Any]:
    """Latency (last publish -> result), service time, publish and step costs, wrong values."""
    wanted = [t for t in range(WARMUP, steps) if t % every == 0]
    last_pub = {t: max(r["pub_end"][t] for r in run.ranks) for t in range(steps)}
    latency = [run.result_time[t] - last_pub[t] for t in wanted if t in run.result_time]
    # each hop's share: last publish -> node actor begins the copy (its poll) -> stored -> the head has
    # every block (node -> head call) -> the driver has it (long poll) -> result recorded (bind, compute)
    marks = {
        t: (last_pub[t], *run.hops[t], run.result_time[t]) for t in wanted if t in run.hops and t in run.result_time
    }
    names = ("node_poll", "node_put", "to_head", "to_driver", "driver")
    hops = {name: round(1e3 * med([m[i + 1] - m[i] for m in marks.values()]), 3) for i, name in enumerate(names)}
    service, previous = [], None
    for t in sorted(run.result_time):
        if t >= WARMUP and previous is not None:
            service.append(run.result_time[t] - max(previous, last_pub[t]))
        previous = run.result_time[t]
    publish = [r["pub_ns"][t] / 1e3 for r in run.ranks for t in wanted]
    step_cost = [r["step_ns"][t] / 1e3 for r in run.ranks for t in range(WARMUP, steps)]
    offset = (ranks - 1) / 2.0
    wrong = sum(1 for t, v in run.values.items() if abs(float(v) - (t + offset)) > 1e-9)
    missing = len([t for t in range(steps) if t % every == 0]) - len(run.values)
    return {
        "latency_ms": {"median": 1e3 * med(latency), "p90": 1e3 * pctl(latency, 90), "n": len(latency)},
        "hops_ms": hops,
        "service_ms": {"median": 1e3 * med(service), "p90": 1e3 * pctl(service, 90), "n": len(service)},
        "publish_us": {"median": med(publish), "p90": pctl(publish, 90), "n": len(publish)},
        "step_us": {"mean": sum(step_cost) / len(step_cost), "median": med(step_cost)},
        "wrong_values": wrong,
        "missing_results": missing,
        "wall_s": run.wall_s,
        "put_s_per_block": _per_block(run.node_counts, "put_seconds"),
        "puts_per_block": _per_block(run.node_counts, "puts"),
    }


def _per_block(counts: list[Any], what: str) -> float | None:
    """A node actor count (seconds storing blocks, objects stored) per block ingested."""
    blocks = sum(c.blocks for c in counts)
    return sum(getattr(c, what) for c in counts) / blocks if blocks else None


class MemorySampler:
    """Samples, every ``period`` s during a coupled run, the analytics side's memory.

    Driver RSS (this process), node and head actor RSS (Ray workers found by their process
    title) and the tmpfs pages of Ray's object store file (a high-water mark) in one thread;
    the object store bytes in use (``doreisa.testing.store_stats``, an RPC that can take
    seconds on a busy machine) in a second thread, so that it never delays the first.
    """

    def __init__(self, period: float = 0.5) -> None:
        self.period = period
        self.samples: list[dict[str, float]] = []
        self.store: list[tuple[float, float]] = []  # (step, MiB in use)
        self._session: Any = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def attach(self, session: Any) -> None:
        """Start sampling ``session``."""
        self._session = session
        for target in (self._loop, self._store_loop):
            thread = threading.Thread(target=target, name="bench-memory", daemon=True)
            thread.start()
            self._threads.append(thread)

    def detach(self) -> None:
        """Stop sampling (before the session stops)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            table = proc_table()
            sample = {"t": time.time(), "step": float(self._session.state.last_step), "driver": rss_mb(os.getpid())}
            sample.update(node=0.0, head=0.0, store_hwm=0.0)
            for pid in descendants(os.getpid(), table):
                cmd = table[pid][2] if pid in table else ""
                for key, title in (("node", "ray::NodeActor"), ("head", "ray::HeadState")):
                    if cmd.startswith(title):
                        sample[key] += rss_mb(pid)
                if "/raylet" in cmd.split(" ", 1)[0]:
                    sample["store_hwm"] = shm_mb(pid)
            self.samples.append(sample)

    def _store_loop(self) -> None:
        from doreisa.testing import store_stats

        while not self._stop.wait(4 * self.period):
            step = float(self._session.state.last_step)
            try:
                self.store.append((step, store_stats()["used_mib"]))
            except Exception:  # Ray's internal API changed or is busy: the RSS samples go on
                continue


def memory_growth(sampler: MemorySampler, steps: int) -> dict[str, Any]:
    """Growth of each series from early (20-30 % of the steps) to late (last 15 %) samples."""

    def window(points: list[tuple[float, float]]) -> dict[str, float]:
        early = [v for step, v in points if 0.2 * steps <= step < 0.3 * steps]
        late = [v for step, v in points if step >= 0.85 * steps - 1]
        a, b = med(early), med(late)
        return {"early": a, "late": b, "growth": b - a, "n_early": len(early), "n_late": len(late)}

    out: dict[str, Any] = {}
    for key in ("driver", "node", "head", "store_hwm"):
        out[key] = window([(s["step"], s[key]) for s in sampler.samples])
    out["store"] = window(sampler.store)
    out["total_rss_growth"] = sum(out[k]["growth"] for k in ("driver", "node", "head"))
    half = [(s["step"], s["driver"] + s["node"] + s["head"]) for s in sampler.samples if s["step"] >= steps / 2]
    out["slope_mb_per_1000_steps"] = 1000 * _slope(half) if len(half) >= 3 else math.nan
    return out


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else math.nan

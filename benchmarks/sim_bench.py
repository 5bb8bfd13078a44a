"""The simulation side of the benchmarks: one MPI rank that times its own ``publish`` calls.

Started by ``benchmarks/run.py`` under ``mpiexec`` against a live doreisa Session (the
environment carries ``DOREISA_RUN_DIR``). Each rank writes ``OUTDIR/rank<R>.json``.

Modes
-----
skip
    Publish steps the contract does not want (cadence ``every`` larger than the run) and
    time each call, then batches of calls; also the cost of the timer itself.
copy
    For each array of the contract (one per block size, every step wanted), interleave
    bursts of 3 ``publish``, 3 ``np.copyto`` into a preallocated array and 3 ``block.copy()``
    of the same block, rotating their order, with a pause after each burst so that the node
    actor has taken the slots (the ring wait is then not part of the figure). The first call
    of a burst is "cold" (as in a simulation: one publish per step), the others "warm".
steps
    The coupled scenario: each step fills the block with ``rank + step`` (the "simulation")
    and publishes it; records wall-clock start/end of each publish (to match the analytics'
    result times) and the cost of the whole step. ``--sleep`` paces the steps.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import time
from typing import Any

import numpy as np
from mpi4py import MPI

import doreisa


def run_skip(bridge: Any, args: argparse.Namespace) -> dict[str, Any]:
    block = np.zeros((16, 16))
    bridge.publish("field", block, step=0)  # sets the layout up (collective) and copies step 0
    pub, clock = bridge.publish, time.perf_counter_ns
    step = 1
    for _ in range(2000):  # warm-up
        pub("field", block, step=step)
        step += 1
    single = np.empty(args.calls, dtype=np.int64)
    for i in range(args.calls):
        t0 = clock()
        pub("field", block, step=step)
        single[i] = clock() - t0
        step += 1
    empty = np.empty(args.calls, dtype=np.int64)
    for i in range(args.calls):
        t0 = clock()
        empty[i] = clock() - t0
    batch = 1000
    batches = []
    for _ in range(max(1, args.calls // batch)):
        t0 = clock()
        for _ in range(batch):
            pub("field", block, step=step)
            step += 1
        batches.append((clock() - t0) / batch)
    out: dict[str, Any] = {
        "single_ns_median": float(np.median(single)),
        "single_ns_p90": float(np.percentile(single, 90)),
        "timer_ns_median": float(np.median(empty)),
        "batch_ns_median": float(np.median(batches)),
        "batch_ns_min": float(np.min(batches)),
        "calls": int(args.calls),
    }
    if args.profile:
        out["profile"] = _profile(lambda: [pub("field", block, step=step + 1 + k) for k in range(100_000)])
    return out


BURST = 3


def run_copy(bridge: Any, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"cold_penalty": cold_penalty()}
    arrays = bridge.contract.arrays
    smallest = min(arrays, key=lambda n: arrays[n].shape)
    for name, spec in arrays.items():
        out[name] = _copy_one(bridge, name, spec.shape, args, profile=args.profile and name == smallest)
    return out


def cold_penalty() -> dict[str, float]:
    """The same small Python operation (``json.dumps`` of a publish message) in a warm loop and
    right after a 10 ms sleep: on a shared VM the second is many times slower (caches, predictors)."""
    msg = {"t": "put", "a": "field", "s": 5, "tm": None, "slot": 1, "i": [0, 0]}
    clock = time.perf_counter_ns

    def one() -> int:
        t0 = clock()
        json.dumps(msg, separators=(",", ":"))
        return clock() - t0

    warm = [one() for _ in range(2000)]
    cold = []
    for _ in range(100):
        time.sleep(0.01)
        cold.append(one())
    return {"warm_us": float(np.median(warm)) / 1e3, "after_sleep_us": float(np.median(cold)) / 1e3}


def _copy_one(bridge: Any, name: str, shape: tuple[int, ...], args: argparse.Namespace, *, profile: bool) -> Any:
    clock = time.perf_counter_ns
    block = np.random.default_rng(0).random(shape)
    dest = np.empty_like(block)
    reps = max(5, min(args.reps, int(args.budget_bytes // block.nbytes)))
    # After each burst, let the node actor finish its ray.put of the published blocks (>= 1 ms
    # each here): publish then never waits for a ring slot, and no timed copy shares the
    # memory bus with the node actor's copy.
    pause = BURST * (0.005 + block.nbytes / 0.5e9)
    step = iter(range(10**9))

    def do_publish() -> int:
        t0 = clock()
        copied = bridge.publish(name, block, step=next(step))
        dt = clock() - t0
        if not copied:
            raise SystemExit(f"{name} was not copied: {bridge.stats.as_dict()}")
        return dt

    def do_copyto() -> int:
        t0 = clock()
        np.copyto(dest, block)
        return clock() - t0

    def do_copy() -> int:
        t0 = clock()
        c = block.copy()
        dt = clock() - t0
        del c
        return dt

    methods = {"publish": do_publish, "copyto": do_copyto, "copy": do_copy}
    order = list(methods)
    cold: dict[str, list[int]] = {k: [] for k in methods}
    warm: dict[str, list[int]] = {k: [] for k in methods}
    for rep in range(reps + 1):
        for k in range(3):
            label = order[(rep + k) % 3]
            times = [methods[label]() for _ in range(BURST)]
            if rep >= 1:  # the first round warms the ring and the allocator
                cold[label].append(times[0])
                warm[label] += times[1:]
            time.sleep(pause)
    med = {k: float(np.median(v)) for k, v in cold.items()}
    result = {
        "nbytes": block.nbytes,
        "reps": reps,
        "median_ns": med,
        "warm_median_ns": {k: float(np.median(v)) for k, v in warm.items()},
        "slow_publishes": sum(1 for v in cold["publish"] if v > 5 * med["publish"]),
    }
    if profile:

        def many() -> None:
            for _ in range(200):
                do_publish()
                time.sleep(pause / BURST)

        result["profile"] = _profile(many)
    return result


def run_steps(bridge: Any, args: argparse.Namespace) -> dict[str, Any]:
    rank = bridge.rank
    block = np.empty((args.chunk, args.chunk))
    pub_start, pub_end, pub_ns, step_ns = [], [], [], []
    clock = time.perf_counter_ns
    for step in range(args.steps):
        s0 = clock()
        block.fill(float(rank + step))  # the "simulation"
        w0 = time.time()
        p0 = clock()
        bridge.publish("field", block, step=step)
        p1 = clock()
        w1 = time.time()
        step_ns.append(p1 - s0)
        pub_ns.append(p1 - p0)
        pub_start.append(w0)
        pub_end.append(w1)
        if args.sleep:
            time.sleep(args.sleep)
    return {"pub_start": pub_start, "pub_end": pub_end, "pub_ns": pub_ns, "step_ns": step_ns}


def _profile(work: Any) -> str:
    prof = cProfile.Profile()
    prof.enable()
    work()
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(14)
    return text.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("mode", choices=["skip", "copy", "steps"])
    p.add_argument("--outdir", required=True)
    p.add_argument("--calls", type=int, default=100_000, help="skip: timed calls")
    p.add_argument("--reps", type=int, default=1000, help="copy: rounds per size (at most)")
    p.add_argument("--budget-bytes", type=float, default=2e9, help="copy: bytes per size per method (caps reps)")
    p.add_argument("--chunk", type=int, default=16, help="steps: block edge")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--sleep", type=float, default=0.0, help="steps: seconds between steps")
    p.add_argument("--profile", action="store_true", help="add a cProfile of publish to the output")
    args = p.parse_args()

    comm = MPI.COMM_WORLD
    t0 = time.time()
    bridge = doreisa.Bridge(comm)
    connect_s = time.time() - t0
    result = {"skip": run_skip, "copy": run_copy, "steps": run_steps}[args.mode](bridge, args)
    c0 = time.time()
    stats = bridge.close()
    result.update(rank=bridge.rank, connect_s=connect_s, close_s=time.time() - c0, stats=stats)
    with open(os.path.join(args.outdir, f"rank{bridge.rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()

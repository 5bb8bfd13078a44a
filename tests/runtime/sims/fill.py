"""Test simulation: each rank fills its block with known values and publishes it.

Global value at (i, j) and step s: ``s + 1000 * i + j`` (1-D arrays: ``s + i``), so every
analytic result can be checked exactly against numpy.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

import numpy as np
from mpi4py import MPI

import doreisa


def split(n: int, parts: int, index: int) -> tuple[int, int]:
    base, extra = divmod(n, parts)
    return index * base + min(index, extra), base + (1 if index < extra else 0)


def expected(shape: tuple[int, ...], step: int) -> np.ndarray:
    """The whole array at ``step``."""
    if len(shape) == 1:
        return step + np.arange(shape[0], dtype=np.float64)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return step + 1000.0 * i + j


def spoil(block: np.ndarray, when: str, step: int, *, last_rank: bool) -> None:
    """--nonfinite START:STOP: a NaN and an Inf in the last rank's block at those steps."""
    if when and last_rank and int(when.split(":")[0]) <= step < int(when.split(":")[1]):
        block.flat[0], block.flat[-1] = np.nan, np.inf


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="16,16")
    p.add_argument("--grid", default="", help="rank grid, e.g. 2,2 (default: MPI.Compute_dims)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--first-step", type=int, default=0)
    p.add_argument("--array", default="field")
    p.add_argument("--dtype", default="float64")
    p.add_argument("--sleep", type=float, default=0.0, help="seconds per step")
    p.add_argument("--dt", default="", help="comma list of dt values cycled (simulation time)")
    p.add_argument("--die-at", type=int, default=-1, help="rank 1 exits abruptly at this step")
    p.add_argument("--bad", default="", help="dtype|shape|overlap|order: publish a bad block on rank 0")
    p.add_argument("--stats", default="", help="write each rank's close() summary to this folder")
    p.add_argument("--bump", action="append", default=[], help="START:STOP:AMOUNT added at steps [START, STOP)")
    p.add_argument("--feedback-log", default="", help="folder: each rank writes bridge.feedback seen at each step")
    p.add_argument("--plugins", default="", help="import this module (beside this file) before the Bridge")
    p.add_argument("--hang", default="", help="RANK:SECONDS: that rank sleeps before its first publish")
    p.add_argument("--nonfinite", default="", help="START:STOP: the last rank's block has a NaN and an Inf then")
    a = p.parse_args()
    if a.plugins:
        importlib.import_module(a.plugins)  # registers the operators the contract names

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    shape = tuple(int(x) for x in a.shape.split(","))
    grid = [int(x) for x in a.grid.split(",")] if a.grid else MPI.Compute_dims(size, len(shape))
    coords = np.unravel_index(rank, grid)
    bounds = [split(n, g, c) for n, g, c in zip(shape, grid, coords, strict=True)]
    offset = tuple(o for o, _ in bounds)
    local = tuple(slice(o, o + n) for o, n in bounds)
    if a.bad == "overlap" and rank == 1:
        offset = tuple(0 for _ in offset)
    bridge = doreisa.Bridge(comm)
    if a.hang and int(a.hang.split(":")[0]) == rank:
        time.sleep(float(a.hang.split(":")[1]))  # stuck: the others wait for it in the first publish
    dts = [float(x) for x in a.dt.split(",")] if a.dt else [0.1]
    bumps = [b.split(":") for b in a.bump]
    seen: list[list[object]] = []
    t = 0.0
    for k, step in enumerate(range(a.first_step, a.first_step + a.steps)):
        if step == a.die_at and rank == 1:
            os._exit(3)
        block = expected(shape, step)[local].astype(a.dtype)
        block += sum(float(amount) for lo, hi, amount in bumps if int(lo) <= step < int(hi))
        spoil(block, a.nonfinite, step, last_rank=rank == size - 1)
        if a.bad == "dtype" and rank == 0 and k == 1:
            block = block.astype(np.float32)
        if a.bad == "order" and rank == 0 and k == 1:
            step = 0
        bridge.publish(a.array, block, step=step, time=t, offset=offset)
        if a.feedback_log:
            seen.append([step, dict(bridge.feedback)])
        t += dts[k % len(dts)]
        if a.sleep:
            time.sleep(a.sleep)
    stats = bridge.close()
    if a.feedback_log:
        with open(os.path.join(a.feedback_log, f"rank{rank}.json"), "w") as f:
            json.dump(seen, f)
    if a.stats:
        with open(os.path.join(a.stats, f"rank{rank}.json"), "w") as f:
            json.dump(stats, f)
    # One write per line: under ``doreisa run`` on a terminal, PYTHONUNBUFFERED makes print() write
    # the text and its newline separately, and two ranks' lines could then merge into one.
    sys.stdout.write(f"rank {rank} done {json.dumps(stats)}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

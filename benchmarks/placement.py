"""Placement benchmarks: in transit vs in situ publish cost, and halo bytes vs whole-block moves.

Run as ``.venv/bin/python benchmarks/placement.py --json OUT.json [--quick]``. The script
starts its own Ray cluster of three nodes on this machine (``ray.cluster_utils.Cluster``, as
``tests/conftest.py`` does: a head node that carries the ``doreisa_analytics`` resource, plus
two simulation nodes; one CPU and a 300 MiB object store each, 127.0.0.1, own temp dir),
runs the two measurements below, writes one JSON object and shuts the cluster down. A
measurement that fails is recorded as ``{"error": ...}``; the other one still runs.

1. ``transit`` -- what the simulation pays for each placement mode
    The same coupled run twice per block size, once with ``placement: {mode: in_situ}``
    (each block stays in the object store of the node where its rank's node actor runs)
    and once with ``in_transit`` (the node actor ships each block to a relay actor on the
    analytics node, the head). It is ``benchmarks/sim_bench.py steps`` under ``mpiexec``
    (2 real MPI ranks, one C x C float64 block each, every step wanted, a global mean per
    step), started with ``benchmarks/scenarios.py::coupled``; the ranks time their own
    ``publish`` with ``time.perf_counter_ns``. Steps are paced (``--sleep``, standing in for
    the simulation's compute) so that the figure is mostly the cost of handing a block over
    rather than backpressure (``max_in_flight: 4``, ``policy: block``). 256x256 (512 KiB) and
    1024x1024 (8 MiB) blocks; 30 timed steps per run with ``--quick`` (one run per mode),
    60 otherwise (two runs per mode, in ABBA order so that neither mode always runs first).
    Reported per mode, over the pooled ``publish`` samples of the wanted steps after the
    first ``scenarios.WARMUP``: median, p90 and mean (µs); the analytics latency (last
    publish -> result); and where the blocks ended: blocks relayed to the analytics node
    (the relay actors' counts) vs blocks kept by the node actors (in situ, a rank may also
    feed the head node's actor: those count as on the analytics node). Then
    ``ratio_transit_over_situ`` of the medians (and of the p90s and means).

2. ``halo`` -- bytes copied between nodes by a stencil vs by a whole-block gather
    No MPI: one small actor per simulation node (pinned with a hard node affinity) ``ray.put``
    s row blocks of a global float64 array (small integers, so every sum is exact), two per
    node: blocks 0-1 on node A, 2-3 on node B, so one block boundary crosses nodes. A Dask
    array is built over the object references as ``doreisa.runtime.cluster.driver.to_dask`` does,
    then, each time on fresh blocks (new objects, same values):

    a. ``(x.map_overlap(laplacian, depth=1, boundary="none") ** 2).sum()`` with
       ``doreisa.runtime.scheduling.scheduler.partitioned_get`` (``record`` filled: ``moved_bytes`` is
       the bytes of the parts' results read on another node, the caller's included);
    b. ``x.rechunk(x.shape)`` (one task reads every block) with the same scheduler;
    c. the stencil of (a) with Ray's stock ``ray.util.dask.ray_dask_get``.

    Whole-block copies are counted from ``ray.experimental.get_object_locations`` on the
    blocks: ``object_size * (number of nodes holding it - 1)``. The results are checked
    exactly against numpy on the locally rebuilt global array (the gather too).
    ``halo_bytes_theory`` is one row each way per block boundary that crosses nodes.
    Results smaller than Ray's inline limit (100 KiB) travel inside task messages, not
    through the object stores: ``moved_bytes`` counts their serialised size. ``halo_wide`` repeats
    the three with a geometry whose halo rows (128 KiB) are larger than that limit.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from doreisa.runtime.cluster import prepare_ray_env

prepare_ray_env()  # before any ray import (loopback trap, see shared/RELIABILITY.md)
sys.path.insert(0, str(Path(__file__).resolve().parent))

NODE_STORE = 300 * 1024 * 1024
ANALYTICS_RESOURCE = "doreisa_analytics"
RANKS = 2


# -- the cluster ---------------------------------------------------------------------------


def cluster() -> Any:
    """Head (analytics resource) + 2 simulation nodes on 127.0.0.1, each with one CPU."""
    from doreisa.testing import local_cluster

    return local_cluster(
        2, head_resources={ANALYTICS_RESOURCE: 1}, store_bytes=NODE_STORE, namespace="doreisa-bench-placement"
    )


def guarded(fn: Callable[[], Any]) -> Any:
    """``fn()``, or ``{"error": ...}`` if it raises; with the foreign CPU share around it."""
    from bench_common import CpuMeter

    meter, started = CpuMeter(), time.monotonic()
    try:
        out = fn()
    except Exception as exc:
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
    if isinstance(out, dict):
        out.setdefault("wall_s", round(time.monotonic() - started, 1))
        out["foreign_cpu"] = round(meter.foreign(), 3)
    return out


def log(message: str) -> None:
    print(f"[placement] {message}", file=sys.stderr, flush=True)


# -- 1. in transit vs in situ ----------------------------------------------------------------


@contextlib.contextmanager
def recorded_sessions(into: list[Any]) -> Iterator[None]:
    """Make ``scenarios.coupled`` use a Session that keeps its node actors' ids before stopping."""
    import ray
    import scenarios

    base = scenarios.Session

    class Recording(base):  # type: ignore[misc, valid-type]
        node_ids: list[str]

        def stop(self) -> None:
            self.node_ids = []
            with contextlib.suppress(Exception):
                self.node_ids = ray.get([n.node_id.remote() for n in self._nodes], timeout=30)
            super().stop()
            into.append(self)

    scenarios.Session = Recording
    try:
        yield
    finally:
        scenarios.Session = base


def where_blocks(session: Any, analytics_node: str) -> dict[str, Any]:
    """Blocks kept on the simulation nodes vs on the analytics node, from the actors' counts."""
    ingested = [c.blocks for c in session.last_node_counts]
    relayed = sum(c.blocks for c in session.last_transit_counts)
    ids = getattr(session, "node_ids", [])
    on_head = sum(n for n, node in zip(ingested, ids, strict=False) if node == analytics_node)
    return {
        "blocks_on_analytics_node": relayed + on_head,
        "blocks_on_simulation_nodes": sum(ingested) - relayed - on_head,
        "relayed_blocks": relayed,
        "ingested_per_node": {node[:8]: n for n, node in zip(ingested, ids, strict=False)},
        "rank_nodes": sorted({node[:8] for node in session.state.hello.values()}),
        "analytics_node": analytics_node[:8],
    }


def transit_one(*, mode: str, chunk: int, steps: int, sleep: float, analytics_node: str) -> dict[str, Any]:
    """One coupled run of ``sim_bench.py steps`` with ``placement: {mode: MODE}``.

    Returns the run's summary and, under ``_publish_us``, every timed publish after the warm-up.
    """
    import scenarios

    rows, cols = scenarios.grid_for(RANKS)
    text = scenarios.contract((rows * chunk, cols * chunk), (chunk, chunk), every=1)
    text += f"placement: {{mode: {mode}}}\n"
    args = ["steps", "--chunk", str(chunk), "--steps", str(steps), "--sleep", str(sleep)]
    sessions: list[Any] = []
    with recorded_sessions(sessions):
        run = scenarios.coupled(text, args, nranks=RANKS, timeout=60 + steps * (sleep + 1.0))
    stats = scenarios.step_stats(run, ranks=RANKS, steps=steps, every=1)
    if stats["wrong_values"]:
        raise RuntimeError(f"{mode}: wrong analytic results: {stats}")
    out: dict[str, Any] = {
        "publish_us_median": stats["publish_us"]["median"],
        "publish_us_p90": stats["publish_us"]["p90"],
        "latency_ms_median": stats["latency_ms"]["median"],
        "put_s_per_block": stats["put_s_per_block"],
        "missing_results": stats["missing_results"],
        "where": where_blocks(sessions[-1], analytics_node) if sessions else None,
        "run_wall_s": round(run.wall_s, 1),
        "_publish_us": [r["pub_ns"][t] / 1e3 for r in run.ranks for t in range(scenarios.WARMUP, steps)],
        "_latency_ms": stats["latency_ms"]["median"],
    }
    if stats["missing_results"]:  # the publish figures stand; the analytics side failed
        out["warning"] = f"{stats['missing_results']} analytic results missing (see the session's log)"
    return out


def pooled(mode: str, runs: list[dict[str, Any]], *, chunk: int, steps: int, sleep: float) -> dict[str, Any]:
    """One mode's figures over its runs (publish samples pooled); an error if no run succeeded."""
    from bench_common import med, pctl

    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": "; ".join(r["error"] for r in runs), "runs": runs}
    samples = [v for r in good for v in r.pop("_publish_us")]
    latency = [r.pop("_latency_ms") for r in good]
    where: dict[str, int] = {}
    for r in good:
        for key in ("blocks_on_analytics_node", "blocks_on_simulation_nodes", "relayed_blocks"):
            where[key] = where.get(key, 0) + (r["where"] or {}).get(key, 0)
    return {
        "mode": mode,
        "publish_us_median": med(samples),
        "publish_us_p90": pctl(samples, 90),
        "publish_us_mean": sum(samples) / len(samples),
        "publish_samples": len(samples),
        "steps": steps,
        "runs_ok": len(good),
        "ranks": RANKS,
        "block_bytes": chunk * chunk * 8,
        "sleep_s": sleep,
        "latency_ms_median": med(latency),
        "where": where,
        "runs": runs,
    }


def transit(*, chunk: int, steps: int, sleep: float, analytics_node: str, order: list[str]) -> dict[str, Any]:
    """Coupled runs of one block size, modes in ``order``; pooled figures and the ratio of the medians."""
    import scenarios

    out: dict[str, Any] = {"block_bytes": chunk * chunk * 8, "chunk": [chunk, chunk], "order": order}
    runs: dict[str, list[dict[str, Any]]] = {"in_situ": [], "in_transit": []}
    for mode in order:
        log(f"transit {mode}: {RANKS} ranks x {chunk}x{chunk} float64, {steps} steps")
        one = functools.partial(
            transit_one,
            mode=mode,
            chunk=chunk,
            steps=steps + scenarios.WARMUP,
            sleep=sleep,
            analytics_node=analytics_node,
        )
        runs[mode].append(guarded(one))
    for mode, mode_runs in runs.items():
        out[mode] = pooled(mode, mode_runs, chunk=chunk, steps=steps, sleep=sleep)
    situ, trans = out["in_situ"], out["in_transit"]
    if "error" not in situ and "error" not in trans:
        out["ratio_transit_over_situ"] = trans["publish_us_median"] / situ["publish_us_median"]
        out["ratio_transit_over_situ_p90"] = trans["publish_us_p90"] / situ["publish_us_p90"]
        out["ratio_transit_over_situ_mean"] = trans["publish_us_mean"] / situ["publish_us_mean"]
    return out


# -- 2. halo bytes vs whole-block moves ------------------------------------------------------


def make_block(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Small integers as float64: sums of squares stay exact whatever the order."""
    return np.random.default_rng(seed).integers(0, 16, size=shape).astype(np.float64)


def laplacian(b: np.ndarray) -> np.ndarray:
    """5-point Laplacian of the interior; zero on the edges."""
    out = np.zeros_like(b)
    out[1:-1, 1:-1] = b[:-2, 1:-1] + b[2:, 1:-1] + b[1:-1, :-2] + b[1:-1, 2:] - 4 * b[1:-1, 1:-1]
    return out


def block_copies(refs: list[Any]) -> int:
    """Bytes of the blocks' extra copies in other nodes' object stores."""
    from doreisa.testing import object_locations  # one reference per call: safe with several owners

    def count() -> int:
        return sum(info["object_size"] * max(0, len(info["node_ids"]) - 1) for info in object_locations(refs).values())

    # the owner learns of new copies asynchronously: count until two reads agree (at most ~2 s)
    last, deadline = count(), time.monotonic() + 2
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = count()
        if now == last:
            break
        last = now
    return last


class HaloRig:
    """Row blocks of one global array, ``blocks_per_node`` on each of the two simulation nodes."""

    def __init__(self, *, block_rows: int, cols: int, blocks_per_node: int) -> None:
        import ray

        from doreisa.testing import put_on_node  # an owner actor on each node, as a node actor

        self.sim_nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and not n["Resources"].get(ANALYTICS_RESOURCE)]
        if len(self.sim_nodes) < 2:
            raise RuntimeError(f"need 2 simulation nodes, found {len(self.sim_nodes)}")
        self.sim_nodes = self.sim_nodes[:2]
        self.holders = [put_on_node(node, [])[0] for node in self.sim_nodes]
        self.nblocks = 2 * blocks_per_node
        self.shape = (block_rows, cols)
        self.owner = [i // blocks_per_node for i in range(self.nblocks)]  # block i -> holder index
        self.block_bytes = block_rows * cols * 8
        self.expected = np.concatenate([make_block(i, self.shape) for i in range(self.nblocks)])
        self.energy = float((laplacian(self.expected) ** 2).sum())
        self.crossings = sum(self.owner[i] != self.owner[i + 1] for i in range(self.nblocks - 1))
        self._generation = 0

    def fresh(self) -> tuple[Any, list[Any], dict[str, str], dict[str, int]]:
        """New block objects (same values): the Dask array, the refs, their nodes and sizes."""
        import dask.array as da
        import ray

        self.release()
        refs: list[Any] = []
        for h, holder in enumerate(self.holders):
            mine = [make_block(i, self.shape) for i in range(self.nblocks) if self.owner[i] == h]
            refs += ray.get(holder.put.remote(mine))
        self._generation += 1
        name = f"placement-blocks-{self._generation}"
        graph = {(name, i, 0): ref for i, ref in enumerate(refs)}
        chunks = ((self.shape[0],) * self.nblocks, (self.shape[1],))
        x = da.Array(graph, name, chunks=chunks, dtype=np.float64)  # pyright: ignore[reportCallIssue]
        leaf_nodes = {ref.hex(): self.sim_nodes[self.owner[i]] for i, ref in enumerate(refs)}
        leaf_bytes = {ref.hex(): self.block_bytes for ref in refs}
        if before := block_copies(refs):
            raise RuntimeError(f"fresh blocks already have {before} bytes of copies")
        return x, refs, leaf_nodes, leaf_bytes

    def release(self) -> None:
        """The holders forget their blocks (freed once the driver drops its refs too)."""
        import ray

        ray.get([h.drop.remote() for h in self.holders])

    def close(self) -> None:
        import ray

        for holder in self.holders:
            ray.kill(holder)


def stencil(x: Any) -> Any:
    """Sum of squares of the 5-point Laplacian, a Dask computation (one row of halo)."""
    return (x.map_overlap(laplacian, depth=1, boundary="none") ** 2).sum()


def _partitioned(leaf_nodes: dict[str, str], leaf_bytes: dict[str, int], rec: dict[str, Any]) -> Any:
    try:
        from doreisa.runtime.scheduling.scheduler import partitioned_get
    except ImportError as exc:
        raise RuntimeError(f"doreisa.runtime.scheduling.scheduler.partitioned_get is not importable: {exc}") from exc
    return functools.partial(partitioned_get, leaf_nodes=leaf_nodes, leaf_bytes=leaf_bytes, record=rec)


def halo_stencil(rig: HaloRig) -> dict[str, Any]:
    """(a) the stencil with partitioned_get."""
    import dask

    x, refs, leaf_nodes, leaf_bytes = rig.fresh()
    rec: dict[str, Any] = {}
    t0 = time.perf_counter()
    (energy,) = dask.compute(stencil(x), scheduler=_partitioned(leaf_nodes, leaf_bytes, rec))
    seconds = time.perf_counter() - t0
    copies = block_copies(refs)
    if float(energy) != rig.energy:
        raise AssertionError(f"partitioned stencil: {float(energy)!r} != numpy {rig.energy!r}")
    return {"moved_bytes": rec.get("moved_bytes"), "block_copies_bytes": copies, "s": seconds, "record": rec}


def halo_gather(rig: HaloRig) -> dict[str, Any]:
    """(b) the whole array in one chunk with partitioned_get; checked against the blocks put."""
    import dask

    x, refs, leaf_nodes, leaf_bytes = rig.fresh()
    rec: dict[str, Any] = {}
    t0 = time.perf_counter()
    (full,) = dask.compute(x.rechunk(x.shape), scheduler=_partitioned(leaf_nodes, leaf_bytes, rec))
    seconds = time.perf_counter() - t0
    copies = block_copies(refs)
    if not np.array_equal(full, rig.expected):
        raise AssertionError("the gathered array differs from the blocks put")
    if float((laplacian(full) ** 2).sum()) != rig.energy:
        raise AssertionError("numpy's stencil on the gathered array differs")
    return {"block_copies_bytes": copies, "s": seconds, "record": rec}


def halo_stock(rig: HaloRig) -> dict[str, Any]:
    """(c) the stencil with Ray's stock ray_dask_get."""
    import dask
    from ray.util.dask import ray_dask_get

    x, refs, _, _ = rig.fresh()
    t0 = time.perf_counter()
    (energy,) = dask.compute(stencil(x), scheduler=ray_dask_get)
    seconds = time.perf_counter() - t0
    copies = block_copies(refs)
    if float(energy) != rig.energy:
        raise AssertionError(f"stock stencil: {float(energy)!r} != numpy {rig.energy!r}")
    return {"block_copies_bytes": copies, "s": seconds}


def halo(*, block_rows: int, cols: int, blocks_per_node: int = 2) -> dict[str, Any]:
    """(a) stencil with partitioned_get, (b) whole gather with it, (c) stencil with ray_dask_get."""
    rig = HaloRig(block_rows=block_rows, cols=cols, blocks_per_node=blocks_per_node)
    out: dict[str, Any] = {
        "block_bytes": rig.block_bytes,
        "block_shape": list(rig.shape),
        "global_shape": [block_rows * rig.nblocks, cols],
        "blocks_per_node": blocks_per_node,
        "node_crossings": rig.crossings,
        "halo_bytes_theory": rig.crossings * 2 * cols * 8,
    }
    try:
        parts = {name: guarded(functools.partial(fn, rig)) for name, fn in PARTS.items()}
    finally:
        with contextlib.suppress(Exception):
            rig.release()
        rig.close()
    a, b, c = parts["stencil"], parts["gather"], parts["stock_stencil"]
    out["stencil_moved_bytes"] = a.get("moved_bytes")
    out["stencil_block_copies_bytes"] = a.get("block_copies_bytes")
    out["gather_block_copies_bytes"] = b.get("block_copies_bytes")
    out["stock_stencil_block_copies_bytes"] = c.get("block_copies_bytes")
    out["record"] = a.get("record")
    out["gather_record"] = b.get("record")
    out["seconds"] = {name: part.get("s") for name, part in parts.items()}
    out["errors"] = {name: part["error"] for name, part in parts.items() if "error" in part}
    if "error" not in a and "error" not in b:
        out["stencil_bytes"] = (a["moved_bytes"] or 0) + a["block_copies_bytes"]
        gathered = b["block_copies_bytes"]
        out["ratio_stencil_over_gather"] = out["stencil_bytes"] / gathered if gathered else None
        out["ratio_stencil_moved_over_theory"] = (a["moved_bytes"] or 0) / out["halo_bytes_theory"]
        # halo strips under Ray's inline limit never reach an object store: the theoretical halo instead
        out["ratio_theory_halo_over_gather"] = out["halo_bytes_theory"] / gathered if gathered else None
    if out["errors"] and len(out["errors"]) == len(parts):
        out["error"] = "; ".join(f"{k}: {v}" for k, v in out["errors"].items())
    return out


PARTS: dict[str, Callable[[HaloRig], dict[str, Any]]] = {
    "stencil": halo_stencil,
    "gather": halo_gather,
    "stock_stencil": halo_stock,
}


# -- main ----------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True, help="where to write the results")
    p.add_argument("--quick", action="store_true", help="fewer steps (< 3 min)")
    args = p.parse_args()

    from bench_common import loadavg

    started = time.monotonic()
    measured = 30 if args.quick else 60  # timed steps per run, after scenarios.WARMUP steps
    rounds = 1 if args.quick else 2  # runs per mode and block size
    # (block edge, seconds between steps): the pause lets the node actors and the analytics keep up
    sizes = [(256, 0.05), (1024, 0.15)]
    result: dict[str, Any] = {"quick": args.quick, "cores": os.cpu_count(), "loadavg_start": loadavg()}
    try:
        with cluster() as made:
            log(f"cluster up after {time.monotonic() - started:.0f} s")
            analytics_node = made.head_node.node_id
            transits = []
            for k, (chunk, sleep) in enumerate(sizes):
                # ABBA orders: neither mode always runs first (the machine's load drifts)
                order = ["in_situ", "in_transit"] if k % 2 == 0 else ["in_transit", "in_situ"]
                order = order + order[::-1] if rounds == 2 else order
                transits.append(
                    guarded(
                        functools.partial(
                            transit,
                            chunk=chunk,
                            steps=measured,
                            sleep=sleep,
                            analytics_node=analytics_node,
                            order=order,
                        )
                    )
                )
            result["transit"] = transits
            log("halo: 2048x1024 float64, 4 row blocks of 4 MiB, 2 per simulation node")
            result["halo"] = guarded(functools.partial(halo, block_rows=512, cols=1024))
            log("halo (wide): 256x16384 float64, 4 row blocks of 8 MiB, halo rows of 128 KiB")
            result["halo_wide"] = guarded(functools.partial(halo, block_rows=64, cols=16384))
    except Exception as exc:
        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    result["loadavg_end"] = loadavg()
    result["wall_s"] = round(time.monotonic() - started, 1)
    Path(args.json).write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

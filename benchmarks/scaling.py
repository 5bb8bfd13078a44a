"""Scheduling that scales (issue #6): a wide reduction on 1 to 16 Ray nodes, per-node parts vs per-task.

Starts its own ``ray.cluster_utils.Cluster`` on this machine (a head plus up to 16 nodes
with 1 CPU and a small object store each; no dashboard; 127.0.0.1), puts ``B`` blocks into
the stores of the first ``n`` nodes (one actor per node calls ``ray.put``, as doreisa's node
actors do: the blocks live and stay there), then times ``x.sum()`` over the ``B``-chunk
Dask array with

* ``stock``: ``ray.util.dask.ray_dask_get``, Ray's Dask scheduler as doreisa 0.3 and
  deisa-ray use it (one Ray task per Dask task, submitted from the driver);
* ``parts``: :func:`doreisa.runtime.scheduling.scheduler.partitioned_get` (one Ray task per node and
  round, next to the blocks), cutting the graph at every call;
* ``prepared``: the same over an array of placeholders, as doreisa's driver hands analytics
  (:mod:`doreisa.runtime.scheduling.graphs`): the first call (a run's first step, timed apart as
  ``first_wall_s``) cuts the graph, the timed calls (later steps) reuse the cut, bind the
  placeholders to the blocks and send the parts, whose tasks the workers already hold.

``tasks_per_s`` = Dask tasks of the stock graph / wall time of ``dask.compute``: the same
sum measured in the same unit for the three (``prepared`` computes an unfused graph, with
other task counts). Every result is checked against the exact sum. Writes one JSON object::

    .venv/bin/python benchmarks/scaling.py --json OUT.json [--quick]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from doreisa.runtime.cluster import prepare_ray_env

prepare_ray_env()  # before anything imports ray

import numpy as np  # noqa: E402

STORE = 80 * 1024 * 1024
BLOCK = (16, 16)


def node_ids(nodes: int) -> list[str]:
    """Ids of the nodes ``local_cluster`` started with the resources ``bench_node_<i>``, in order."""
    import ray

    ids = {}
    for node in ray.nodes():
        for name in node["Resources"]:
            if name.startswith("bench_node_"):
                ids[int(name.rsplit("_", 1)[1])] = node["NodeID"]
    return [ids[i] for i in range(nodes)]


def place_blocks(node_ids: list[str], n: int, total: int) -> tuple[list[Any], dict[str, str], list[Any]]:
    """``total`` blocks, in contiguous runs over the first ``n`` nodes (as ranks fill nodes)."""
    from doreisa.testing import put_on_node  # an actor on each node owns its blocks, as a node actor does

    per = -(-total // n)
    actors, refs, where = [], [], {}
    for i in range(n):
        first, count = i * per, min(per, total - i * per)
        if count <= 0:
            break
        actor, mine = put_on_node(node_ids[i], [np.full(BLOCK, float(first + k)) for k in range(count)])
        actors.append(actor)
        refs += mine
        where.update({r.hex(): node_ids[i] for r in mine})
    return refs, where, actors


def time_reduction(refs: list[Any], where: dict[str, str], reps: int, nodes: int) -> dict[str, Any]:
    import dask
    import dask.array as da
    from dask.base import tokenize
    from ray.util.dask import ray_dask_get

    from doreisa.runtime.scheduling.graphs import placeholder_array
    from doreisa.runtime.scheduling.scheduler import Cuts, partitioned_get

    total = len(refs)
    expected = float(sum(range(total))) * BLOCK[0] * BLOCK[1]
    graph = {("blocks", i, 0): ref for i, ref in enumerate(refs)}
    x = da.Array(graph, "blocks", chunks=((BLOCK[0],) * total, (BLOCK[1],)), dtype=np.float64)  # pyright: ignore[reportCallIssue]
    nbytes = {r.hex(): BLOCK[0] * BLOCK[1] * 8 for r in refs}
    placeholders, bindings = placeholder_array(
        "doreisa-blocks-0", x.chunks, x.dtype, {(i, 0): r for i, r in enumerate(refs)}
    )
    records: dict[str, dict[str, Any]] = {"parts": {}, "prepared": {}}
    parts = functools.partial(partitioned_get, leaf_nodes=where, leaf_bytes=nbytes)
    y = placeholders.sum()
    prepared = functools.partial(parts, bindings=bindings, cuts=Cuts(), signature=tokenize(y))
    modes = {  # name: (array summed, scheduler, dask.compute options)
        "stock": (x, ray_dask_get, {}),
        "parts": (x, functools.partial(parts, record=records["parts"]), {}),
        "prepared": (placeholders, functools.partial(prepared, record=records["prepared"]), {"optimize_graph": False}),
    }
    out: dict[str, Any] = {}
    warm = list(range(0, total, -(-total // nodes)))
    for name, (array, get, options) in modes.items():
        # starts a worker on every node, not timed (prepared's scheduler is told the signature of y only)
        dask.compute(x.blocks[warm].sum(), scheduler=ray_dask_get if name == "stock" else parts)
        walls, cuts = [], []
        # one Ray task per Dask task is 20-100x slower: one timed run of it is enough
        for rep in range(1 if name == "stock" else reps + (name == "prepared")):
            started = time.perf_counter()
            (value,) = dask.compute(array.sum(), scheduler=get, **options)
            walls.append(time.perf_counter() - started)
            if value != expected:
                raise AssertionError(f"{name}: sum {value} != {expected}")
            if name != "stock":
                cuts.append(records[name]["plan_s"])
                if name == "prepared" and records[name]["reused"] != (rep > 0):
                    raise AssertionError(f"prepared: call {rep} reused the cut: {records[name]['reused']}")
        if name == "prepared":
            out[name] = {"first_wall_s": walls[0], "first_plan_ms": cuts[0] * 1e3}
            walls, cuts = walls[1:], cuts[1:]
        out.setdefault(name, {}).update(wall_s_median=statistics.median(walls), wall_s_all=[round(w, 4) for w in walls])
        if cuts:
            out[name]["plan_ms"] = statistics.median(cuts) * 1e3
    tasks = records["parts"]["tasks"]
    for name in modes:
        out[name]["tasks_per_s"] = tasks / out[name]["wall_s_median"]
    out["prepared"]["dask_tasks"] = records["prepared"]["tasks"]
    out.update(dask_tasks=tasks, ray_tasks_parts=records["parts"]["parts"], blocks=total)
    out.update(plan_ms=out["parts"]["plan_ms"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    counts = (1, 4, 16) if args.quick else (1, 2, 4, 8, 16)
    blocks, reps = (256, 2) if args.quick else (1024, 3)
    started = time.monotonic()
    import ray

    from doreisa.testing import local_cluster

    results: dict[str, Any] = {"blocks": blocks, "block_shape": list(BLOCK), "reps": reps, "runs": []}
    nodes = max(counts)
    resources = {i: {f"bench_node_{i}": 1.0} for i in range(nodes)}
    # the head drives and runs no task; every block lives on a one-CPU node
    with local_cluster(nodes, head_cpus=0, node_resources=resources, store_bytes=STORE, namespace="doreisa-scaling"):
        ids = node_ids(nodes)
        for n in counts:
            refs, where, actors = place_blocks(ids, n, blocks)
            try:
                run = time_reduction(refs, where, reps, n)
            except Exception as exc:  # one failing size must not lose the others
                run = {"error": f"{type(exc).__name__}: {exc}"}
            run["nodes"] = n
            results["runs"].append(run)
            print(f"[scaling] {n} nodes: {json.dumps(run)}", file=sys.stderr, flush=True)
            del refs
            for actor in actors:
                ray.kill(actor)
    results["wall_s"] = round(time.monotonic() - started, 1)
    args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The head's cost per step as the job grows: the measurements behind the cost model to 1,000 nodes
in ``docs/performance.md`` (issue #17).

Every step, each node actor sends the head one batch: a ``BlockRecord`` per block its ranks
published (with the block's ``ObjectRef``). The head (``HeadState`` as a threaded Ray actor, as
the runtime starts it) assembles them until the step is complete, and the driver's long poll
takes it. This measures, on a private one-CPU Ray, the wall time from the first batch sent to
the complete step taken, for N node actors and B blocks, with real object references (Ray
serialises each with its owner's address). One process plays the N node actors: each batch is
its own actor call, as on a cluster, but they leave from one process here, so this is the head's
side (deserialisation, assembly, the actor calls it serves) plus one sender's.

Also measured: the head's logic and one serialisation of the records in-process (the size of a
record: what a node sends the head per block, and the head the driver), and the driver's Dask
side per analytic: building the placeholder array of B blocks, the user's ``x.mean()`` on it, and
materialising its graph, as the driver does at every analysed step (no Ray).

    .venv/bin/python benchmarks/cost_model.py            # writes benchmarks/results/cost_model.json
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from doreisa.runtime.cluster import prepare_ray_env

prepare_ray_env()  # before any ray import (the loopback trap, see shared/RELIABILITY.md)

import ray  # noqa: E402

from doreisa.runtime.cluster.head import HeadState  # noqa: E402
from doreisa.runtime.protocol import BlockRecord  # noqa: E402

#: (node actors, blocks per step): a small job, the doreisa internship's 128 nodes / 5,120 chunks,
#: and a step of 1,000 nodes with 40 ranks each measured on a tenth of it (the head's cost is per block)
SHAPES = [(16, 640), (128, 5120), (250, 10000)]
STEPS = 5
OUT = Path(__file__).resolve().parent / "results" / "cost_model.json"


def _records(nodes: int, blocks: int, step: int, refs: list[Any], grouped: bool = False) -> list[list[BlockRecord]]:
    """Each node's batch; ``grouped``: a node's blocks of the step are parts of one object (one
    reference per node, as when a node actor finds all its ranks' blocks in one round)."""
    side = int(blocks**0.5)
    while blocks % side:
        side -= 1
    grid = (side, blocks // side)
    chunks = ((16,) * grid[0], (16,) * grid[1])
    batches: list[list[BlockRecord]] = [[] for _ in range(nodes)]
    for b in range(blocks):
        index = (b // grid[1], b % grid[1])
        node = b * nodes // blocks
        ref, part = (refs[node], len(batches[node])) if grouped else (refs[b], None)
        batches[node].append(
            BlockRecord("t", step, None, index, chunks, blocks, "float64", b, f"n{node}", f"n{node}", ref, part)
        )
    return batches


def _step(head: Any, batches: list[list[BlockRecord]]) -> float:
    started = time.perf_counter()
    calls = [head.add.remote(batch, f"n{i}", batch[0].step) for i, batch in enumerate(batches)]
    taken = ray.get(head.take.remote(30.0))
    assert len(taken.steps) == 1 and len(taken.steps[0].blocks) == sum(map(len, batches)), taken
    elapsed = time.perf_counter() - started
    ray.get(calls)
    return elapsed


def measure(nodes: int, blocks: int, grouped: bool) -> dict[str, Any]:
    head = ray.remote(HeadState).options(max_concurrency=8, num_cpus=0).remote(step_timeout=60.0)
    refs = [ray.put(i) for i in range(nodes if grouped else blocks)]
    walls = [_step(head, _records(nodes, blocks, step, refs, grouped)) for step in range(STEPS)]
    ray.kill(head)
    wall = statistics.median(walls[1:])  # the first step also warms the actor's threads up
    return {
        "nodes": nodes,
        "blocks": blocks,
        "references": len(refs),
        "step_ms": round(wall * 1e3, 2),
        "per_block_us": round(wall / blocks * 1e6, 1),
        "steps_ms": [round(w * 1e3, 2) for w in walls],
    }


def in_process(nodes: int, blocks: int) -> dict[str, float]:
    """The head's own logic per block, and one serialisation of a batch with a reference per block
    (each record crosses two processes: node actor to head, head to driver)."""
    batches = _records(nodes, blocks, 0, [ray.put(i) for i in range(blocks)])
    head = HeadState(step_timeout=60.0)
    started = time.perf_counter()
    for i, batch in enumerate(batches):
        head.add(batch, f"n{i}", 0)
    assert len(head.take(1.0).steps) == 1
    assembled = time.perf_counter()
    text = ray.cloudpickle.dumps(batches)
    dumped = time.perf_counter()
    ray.cloudpickle.loads(text)
    loaded = time.perf_counter()
    return {
        "assembly_us_per_block": round((assembled - started) / blocks * 1e6, 2),
        "dumps_us_per_block": round((dumped - assembled) / blocks * 1e6, 2),
        "loads_us_per_block": round((loaded - dumped) / blocks * 1e6, 2),
        "record_bytes": round(len(text) / blocks),
    }


def driver_graph(blocks_per_side: int) -> dict[str, float]:
    """The driver's Dask work for ``x.mean()`` over B = side x side placeholder blocks (best of 3)."""
    import itertools

    from doreisa.runtime.scheduling.graphs import placeholder_array

    side = blocks_per_side
    chunks = ((16,) * side, (16,) * side)
    blocks = {index: f"ref{index}" for index in itertools.product(range(side), range(side))}
    best: tuple[float, float, float] | None = None
    tasks = 0
    for _ in range(3):
        started = time.perf_counter()
        x, _ = placeholder_array("t", chunks, "float64", blocks)
        built = time.perf_counter()
        mean = x.mean()
        called = time.perf_counter()
        tasks = len(dict(mean.__dask_graph__()))
        done = time.perf_counter()
        times = (built - started, called - built, done - called)
        best = times if best is None or sum(times) < sum(best) else best
    assert best is not None
    return {
        "blocks": side * side,
        "tasks": tasks,
        "placeholder_ms": round(best[0] * 1e3, 1),
        "analytic_ms": round(best[1] * 1e3, 1),
        "graph_ms": round(best[2] * 1e3, 1),
        "per_block_us": round(sum(best) / (side * side) * 1e6, 1),
    }


def main() -> int:
    ray.init(num_cpus=1, include_dashboard=False, logging_level=logging.WARNING)
    try:
        results = {
            "in_process": in_process(*SHAPES[-1]),
            "head": [measure(n, b, grouped=False) for n, b in SHAPES],
            "head_grouped": [measure(n, b, grouped=True) for n, b in SHAPES],
            "driver_mean": [driver_graph(side) for side in (25, 80, 200)],
        }
    finally:
        ray.shutdown()
    results["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

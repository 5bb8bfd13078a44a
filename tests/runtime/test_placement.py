"""In situ vs in transit: where the blocks live and where the analytics tasks run (issue 5)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from doreisa.analytics import Registry
from doreisa.testing import block_objects, object_locations, run_coupled

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

SIM = Path(__file__).parent / "sims" / "fill.py"
sys.path.insert(0, str(SIM.parent))
from fill import expected  # noqa: E402


def where_registry(seen: dict[str, list[Any]]) -> Registry:
    """An analytic that records where its input blocks live and where its tasks run."""

    registry = Registry()

    @registry.analytic("where")
    def where(x: Any) -> Any:
        refs = block_objects(x)
        # in transit, a block may still be on its way: poll its locations (object_locations asks
        # one reference at a time: Ray 2.60 aborts on some multi-owner get_object_locations calls)
        deadline = time.monotonic() + 30
        while True:
            locations = object_locations(refs)
            if all(loc["node_ids"] for loc in locations.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        seen["blocks"].extend(tuple(loc["node_ids"]) for loc in locations.values())

        def node_of(block: np.ndarray) -> np.ndarray:
            import ray as ray_in_task

            return np.full((1, 1), int(ray_in_task.get_runtime_context().get_node_id()[:12], 16), dtype=np.int64)

        ran = x.map_blocks(node_of, chunks=((1,) * len(x.chunks[0]), (1,) * len(x.chunks[1])), dtype=np.int64)
        seen["tasks"].extend(int(v) for v in np.asarray(ran.compute()).ravel())  # the run's scoped scheduler
        return x.sum()

    return registry


def contract(mode: str) -> str:
    return f"""
arrays:
  field: {{dtype: float64, shape: [512, 256]}}
cadence: {{every: 2}}
placement: {{mode: {mode}}}
timeouts: {{connect: 30, step: 30}}
analytics:
  - function: where
    arrays: [field]
"""


def head_node(cluster: Any) -> str:
    return cluster.head_node.node_id


def test_in_transit_blocks_live_and_are_analysed_on_the_analytics_node(ray_cluster: Any) -> None:
    seen: dict[str, list[Any]] = {"blocks": [], "tasks": []}
    run = run_coupled(
        contract("in_transit"),
        [sys.executable, str(SIM), "--steps", "6", "--shape", "512,256"],
        nranks=2,
        registry=where_registry(seen),
    )
    assert run.returncode == 0, run.output
    analytics = head_node(ray_cluster)
    assert analytics not in set(run.session.state.hello.values()), "no rank feeds the analytics node"
    assert seen["blocks"] and all(nodes == (analytics,) for nodes in seen["blocks"]), seen["blocks"]
    assert seen["tasks"] and set(seen["tasks"]) == {int(analytics[:12], 16)}, "tasks ran on the analytics node"
    assert sum(c.blocks for c in run.session.last_transit_counts) == 6
    for step in (0, 2, 4):
        assert run.values["where"][step] == expected((512, 256), step).sum()


def test_in_situ_blocks_stay_on_the_simulation_nodes(ray_cluster: Any) -> None:
    seen: dict[str, list[Any]] = {"blocks": [], "tasks": []}
    run = run_coupled(
        contract("in_situ"),
        [sys.executable, str(SIM), "--steps", "6", "--shape", "512,256"],
        nranks=2,
        registry=where_registry(seen),
    )
    assert run.returncode == 0, run.output
    rank_nodes = set(run.session.state.hello.values())
    assert {n for nodes in seen["blocks"] for n in nodes} <= rank_nodes
    tasks = [t for t in seen["tasks"]]
    local = sum(t in {int(n[:12], 16) for n in rank_nodes} for t in tasks)
    assert tasks and local == len(tasks), "every task that reads a block runs on the node that holds it"
    assert run.session.last_transit_counts == []

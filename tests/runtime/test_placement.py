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


@pytest.mark.slow
def test_auto_placement_moves_steps_in_transit_while_a_nodes_store_is_past_its_fraction(ray_cluster: Any) -> None:
    """Each node keeps a step in situ while its steps not yet analysed fit ``store_fraction`` of its store
    (here 2.5 blocks of 512 KiB), else relays it to the analytics node; a slow analytic makes steps pile up.
    Every step's blocks are where the nodes' recorded decisions say, and the values are exact."""
    located: dict[int, set[str]] = {}
    registry = Registry()

    @registry.analytic("located")
    def locate(x: Any, *, step: int) -> Any:
        refs = block_objects(x)
        deadline = time.monotonic() + 30
        while True:  # a block relayed in transit may still be on its way
            locations = object_locations(refs)
            if all(loc["node_ids"] for loc in locations.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        located[step] = {n for loc in locations.values() for n in loc["node_ids"]}
        time.sleep(1.0)  # slower than the simulation: steps pile up on the nodes
        return x.sum()

    import ray

    stores = {n["NodeID"]: int(n["Resources"]["object_store_memory"]) for n in ray.nodes() if n["Alive"]}
    fraction = 2.5 * 512 * 1024 / min(stores.values())
    text = contract("auto").replace("{mode: auto}", f"{{mode: auto, store_fraction: {fraction}}}")
    text = text.replace("cadence: {every: 2}", "cadence: {every: 1}").replace("function: where", "function: located")
    run = run_coupled(
        text, [sys.executable, str(SIM), "--steps", "8", "--shape", "512,256"], nranks=2, registry=registry
    )
    assert run.returncode == 0, run.output
    assert run.values["located"] == {s: expected((512, 256), s).sum() for s in range(8)}
    analytics = head_node(ray_cluster)
    rank_nodes = set(run.session.state.hello.values())
    assert analytics not in rank_nodes and len(rank_nodes) == 2
    changes = [r for r in run.session.provenance.records if r["kind"] == "placement"]
    for node in rank_nodes:  # each node starts in situ and decides alone
        mine = [r for r in changes if r["node"] == node]
        assert mine[0]["step"] == 0 and mine[0]["where"] == "in_situ", mine
        assert all(r["store_bytes"] == stores[node] for r in mine)
    assert any(r["where"] == "in_transit" for r in changes), "steps piled up past the fraction"

    def where(node: str, step: int) -> str:
        return [r for r in changes if r["node"] == node and r["step"] <= step][-1]["where"]

    for step, nodes in located.items():
        wanted = {analytics if where(n, step) == "in_transit" else n for n in rank_nodes}
        assert nodes == wanted, (step, nodes, wanted, changes)

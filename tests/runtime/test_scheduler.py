"""Per-node parts on a real 3-node Ray cluster: exact values, one Ray task per node and round."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import ray
from dask.base import tokenize

from doreisa.runtime.scheduling.graphs import blocks_array, placeholder_array
from doreisa.runtime.scheduling.scheduler import Cuts, partitioned_get
from doreisa.testing import block_objects, object_locations, put_on_node

pytestmark = pytest.mark.ray

# Ray workers cannot import this test module: ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROWS, COLS = 64, 48  # 6 row blocks of 64 x 48 float64 (24 KiB each), two per node


@dataclass
class Placed:
    """A step's blocks on the cluster's nodes, as the node actors hold them."""

    blocks: dict[tuple[int, int], Any]  # index -> object reference
    parts: dict[tuple[int, int], int]  # index -> position in its object (blocks stored together)
    where: dict[str, str]  # reference id -> node
    nbytes: dict[str, int]
    actors: list[Any]


def place(full: np.ndarray, nodes: list[str], how: str) -> Placed:
    """The 6 row blocks of ``full``, 2 on each node: each an object ("alone"), or each node's two in one."""
    placed = Placed({}, {}, {}, {}, [])
    for i, node in enumerate(nodes):
        pair = [full[(2 * i + j) * ROWS : (2 * i + j + 1) * ROWS] for j in range(2)]
        actor, refs = put_on_node(node, pair if how == "alone" else [pair])
        placed.actors.append(actor)
        for j in range(2):
            placed.blocks[(2 * i + j, 0)] = refs[j] if how == "alone" else refs[0]
            if how == "together":
                placed.parts[(2 * i + j, 0)] = j
        placed.where.update({r.hex(): node for r in refs})
        placed.nbytes.update({r.hex(): 2 * ROWS * COLS * 8 // len(refs) for r in refs})
    return placed


@pytest.fixture(scope="module")
def nodes(ray_cluster: Any) -> list[str]:
    found = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    assert len(found) == 3
    return found


@pytest.fixture(scope="module", params=["alone", "together"])
def spread(
    nodes: list[str], request: pytest.FixtureRequest
) -> Iterator[tuple[np.ndarray, da.Array, dict[str, str], dict[str, int]]]:
    """A 384 x 48 array as 6 blocks, 2 on each node of the cluster.

    Each block an object ("alone"), or each node's two blocks in one object ("together"), as a
    node actor stores the blocks of a step that its ranks publish at once: a block is then a
    task that takes it out of the object.
    """
    full = np.arange(6 * ROWS * COLS, dtype=np.float64).reshape(6 * ROWS, COLS) % 97
    placed = place(full, nodes, request.param)
    x = blocks_array("spread", ((ROWS,) * 6, (COLS,)), np.float64, placed.blocks, placed.parts)
    yield full, x, placed.where, placed.nbytes
    for actor in placed.actors:
        ray.kill(actor)


def get_with(spread: Any, record: dict[str, Any]) -> Any:
    _, _, where, nbytes = spread
    return functools.partial(partitioned_get, leaf_nodes=where, leaf_bytes=nbytes, record=record)


def stencil(b: np.ndarray) -> np.ndarray:
    out = np.zeros_like(b)
    out[1:-1, 1:-1] = b[:-2, 1:-1] + b[2:, 1:-1] + b[1:-1, :-2] + b[1:-1, 2:] - 4 * b[1:-1, 1:-1]
    return out


def test_a_reduction_is_one_part_per_node_plus_the_combine(spread: Any) -> None:
    full, x, _, _ = spread
    record: dict[str, Any] = {}
    (total,) = dask.compute(x.sum(), scheduler=get_with(spread, record))
    assert total == full.sum()
    assert record["tasks"] > 6, "several Dask tasks..."
    assert record["parts"] == 4, "... in 4 Ray tasks: one per node, then the combine"
    assert record["nodes"] == 3
    assert record["plan_s"] > 0, "the time spent cutting the graph is reported"


def test_values_of_common_graphs(spread: Any) -> None:
    full, x, _, _ = spread
    record: dict[str, Any] = {}
    get = get_with(spread, record)
    mean, std, top = dask.compute(x.mean(axis=0), x.std(), x.max(), scheduler=get)
    np.testing.assert_allclose(mean, full.mean(axis=0))
    np.testing.assert_allclose(std, full.std())
    assert top == full.max()
    (halo,) = dask.compute(x.map_overlap(stencil, depth=1, boundary="none"), scheduler=get)
    np.testing.assert_array_equal(halo, stencil(full))
    (block,) = dask.compute(x.blocks[3], scheduler=get)
    np.testing.assert_array_equal(block, full[3 * ROWS : 4 * ROWS])
    (shifted,) = dask.compute((x[10:-10:3] + 1).rechunk((100, COLS)), scheduler=get)
    np.testing.assert_array_equal(shifted, full[10:-10:3] + 1)


def test_a_stencil_moves_halo_rows_not_blocks(spread: Any) -> None:
    full, x, _, _ = spread
    record: dict[str, Any] = {}
    (energy,) = dask.compute(
        (x.map_overlap(stencil, depth=1, boundary="none") ** 2).sum(), scheduler=get_with(spread, record)
    )
    assert energy == (stencil(full) ** 2).sum()
    # 2 node boundaries x 2 directions x one 48-float64 row; the per-node partial sums travel too
    halo = 2 * 2 * COLS * 8
    assert halo <= record["moved_bytes"] < halo + 3 * 1024, record
    locations = object_locations(block_objects(x))
    assert len(locations) in (3, 6)
    assert all(len(info["node_ids"]) == 1 for info in locations.values()), "no block was copied"


def test_an_error_in_a_task_reaches_the_caller_with_its_type(spread: Any) -> None:
    _, x, _, _ = spread

    def boom(b: np.ndarray) -> np.ndarray:
        raise ZeroDivisionError(f"bad block of shape {b.shape}")

    with pytest.raises(ZeroDivisionError, match=r"bad block of shape \(64, 48\)"):
        dask.compute(x.map_blocks(boom, dtype=np.float64).sum(), scheduler=get_with(spread, {}))


@pytest.mark.parametrize("local_bytes", [1 << 20, 0])
def test_a_small_graph_on_the_callers_node_runs_in_the_caller(ray_cluster: Any, local_bytes: int) -> None:
    here = ray.get_runtime_context().get_node_id()
    blocks = [np.full((8, 8), float(i)) for i in range(3)]
    refs = [ray.put(b) for b in blocks]
    x = da.Array({("local", i, 0): r for i, r in enumerate(refs)}, "local", chunks=((8,) * 3, (8,)), dtype=np.float64)  # pyright: ignore[reportCallIssue]
    record: dict[str, Any] = {}
    get = functools.partial(
        partitioned_get,
        leaf_nodes={r.hex(): here for r in refs},
        leaf_bytes={r.hex(): 512 for r in refs},
        record=record,
        local_bytes=local_bytes,
    )
    (mean, top, block) = dask.compute(x.mean(), x.max(), x.blocks[1], scheduler=get)
    assert (mean, top) == (1.0, 2.0)
    np.testing.assert_array_equal(block, blocks[1])
    # a hand-written graph may ask for a block as it is, next to a task that reads it
    total, raw = get({"blk": refs[2], "total": (np.sum, "blk")}, ["total", "blk"])
    assert total == 128.0
    np.testing.assert_array_equal(raw, blocks[2])
    assert record["parts"] == 1 and record["local"] is bool(local_bytes) and record["plan_s"] > 0, record


# -- a graph cut once, reused at the next steps -----------------------------------------------------


@pytest.mark.timeout(600)  # it starts 12 actors: minutes when two CPU hogs share the 2 cores
def test_a_graph_cut_once_is_reused_with_the_next_steps_blocks(nodes: list[str]) -> None:
    cuts = Cuts()
    records = []
    # 3 steps, each node's blocks stored alone or together, then blocks on other nodes
    for step, (shift, how) in enumerate([(0, "alone"), (0, "together"), (0, "alone"), (1, "together")]):
        full = (np.arange(6 * ROWS * COLS, dtype=np.float64).reshape(6 * ROWS, COLS) + 1000 * step) % 997
        placed = place(full, nodes[shift:] + nodes[:shift], how)
        x, bindings = placeholder_array("doreisa-t-0", ((ROWS,) * 6, (COLS,)), np.float64, placed.blocks, placed.parts)
        if step == 2:  # the blocks of a step arrive in any order
            bindings = dict(reversed(bindings.items()))
        y = (x.map_overlap(stencil, depth=1, boundary="none") ** 2).sum(axis=0)
        record: dict[str, Any] = {}
        get = functools.partial(
            partitioned_get,
            leaf_nodes=placed.where,
            leaf_bytes=placed.nbytes,
            bindings=bindings,
            cuts=cuts,
            signature=tokenize(y),
            record=record,
        )
        (value,) = dask.compute(y, scheduler=get, optimize_graph=False)
        np.testing.assert_array_equal(value, (stencil(full) ** 2).sum(axis=0))
        records.append(record)
        for actor in placed.actors:
            ray.kill(actor)
    assert [r["reused"] for r in records] == [False, True, True, False], "the same graph, then other nodes"
    assert [r["parts"] for r in records[:3]] == [records[0]["parts"]] * 3
    assert (cuts.misses, cuts.hits, len(cuts)) == (2, 2, 2)


def test_a_graph_over_references_is_never_kept(spread: Any) -> None:
    full, x, where, nbytes = spread
    cuts = Cuts()
    y = x.sum()
    get = functools.partial(partitioned_get, leaf_nodes=where, leaf_bytes=nbytes, cuts=cuts, signature=tokenize(y))
    assert dask.compute(y, scheduler=get) == (full.sum(),)
    assert len(cuts) == 0, "its blocks are this step's: another step with the same names must not reuse it"


def test_cuts_keep_the_latest_within_their_bounds() -> None:
    cuts = Cuts(size=2, tasks=100)

    def cut(tasks: int) -> Any:
        return SimpleNamespace(tasks=tasks)

    for key in "abc":
        cuts.put(key, cut(10))
    assert cuts.get("a") is None and cuts.get("b") is not None
    cuts.put("d", cut(10))
    assert cuts.get("c") is None and cuts.get("b") is not None, "b was used since c"
    assert (cuts.hits, cuts.misses) == (2, 2)
    cuts.put("e", cut(95))  # over 100 tasks with any other: kept alone
    assert cuts.get("b") is None and cuts.get("e") is not None and len(cuts) == 1
    cuts.put("f", cut(500))  # the newest is kept whatever its size
    assert len(cuts) == 1 and cuts.get("f") is not None
    cuts.clear()
    assert len(cuts) == 0 and cuts.hits == 4


def test_a_fused_graph_over_placeholders_takes_blocks_out_of_their_objects(nodes: list[str]) -> None:
    # what a compute inside an analytic does: Dask fuses the take tasks into the tasks that read them
    full = np.arange(6 * ROWS * COLS, dtype=np.float64).reshape(6 * ROWS, COLS) % 89
    placed = place(full, nodes, "together")
    x, bindings = placeholder_array("doreisa-t-0", ((ROWS,) * 6, (COLS,)), np.float64, placed.blocks, placed.parts)
    record: dict[str, Any] = {}
    get = functools.partial(
        partitioned_get, leaf_nodes=placed.where, leaf_bytes=placed.nbytes, bindings=bindings, record=record
    )
    (energy, block) = dask.compute(
        (x.map_overlap(stencil, depth=1, boundary="none") ** 2).sum(), x.blocks[3], scheduler=get
    )
    assert energy == (stencil(full) ** 2).sum()
    np.testing.assert_array_equal(block, full[3 * ROWS : 4 * ROWS])
    assert record["nodes"] == 3 and not record["reused"]
    for actor in placed.actors:
        ray.kill(actor)

"""Per-node parts on a real 3-node Ray cluster: exact values, one Ray task per node and round."""

from __future__ import annotations

import functools
import operator
import sys
from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import ray

from doreisa.runtime.scheduler import partitioned_get
from doreisa.testing import block_objects, object_locations, put_on_node

pytestmark = pytest.mark.ray

# Ray workers cannot import this test module: ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROWS, COLS = 64, 48  # 6 row blocks of 64 x 48 float64 (24 KiB each), two per node


@pytest.fixture(scope="module", params=["alone", "together"])
def spread(
    ray_cluster: Any, request: pytest.FixtureRequest
) -> Iterator[tuple[np.ndarray, da.Array, dict[str, str], dict[str, int]]]:
    """A 384 x 48 array as 6 blocks, 2 on each node of the cluster.

    Each block an object ("alone"), or each node's two blocks in one object ("together"), as a
    node actor stores the blocks of a step that its ranks publish at once: a block is then a
    task that takes it out of the object.
    """
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    assert len(nodes) == 3
    full = np.arange(6 * ROWS * COLS, dtype=np.float64).reshape(6 * ROWS, COLS) % 97
    graph, where, nbytes, actors = {}, {}, {}, []
    for i, node in enumerate(nodes):
        pair = [full[(2 * i + j) * ROWS : (2 * i + j + 1) * ROWS] for j in range(2)]
        if request.param == "alone":
            actor, refs = put_on_node(node, pair)
            graph.update({("spread", 2 * i + j, 0): ref for j, ref in enumerate(refs)})
        else:
            actor, refs = put_on_node(node, [pair])
            graph.update({("spread", 2 * i + j, 0): (operator.getitem, refs[0], j) for j in range(2)})
        actors.append(actor)
        where.update({r.hex(): node for r in refs})
        nbytes.update({r.hex(): 2 * ROWS * COLS * 8 // len(refs) for r in refs})
    x = da.Array(graph, "spread", chunks=((ROWS,) * 6, (COLS,)), dtype=np.float64)  # pyright: ignore[reportCallIssue]
    yield full, x, where, nbytes
    for actor in actors:
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

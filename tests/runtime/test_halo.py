"""Stencils move halos, not blocks (issue 5): bytes copied between nodes, counted."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import ray

from doreisa.analytics import Registry
from doreisa.testing import block_objects, object_locations, run_coupled

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

SIM = Path(__file__).parent / "sims" / "fill.py"
sys.path.insert(0, str(SIM.parent))
from fill import expected  # noqa: E402

# Ray workers cannot import this test module: ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's own cloudpickle

SHAPE = (512, 256)  # 2 ranks: two 256x256 float64 blocks of 512 KiB, on two nodes
BLOCK = 256 * 256 * 8


def copied_bytes(blocks: list[Any]) -> int:
    """Bytes of the blocks' extra copies in other nodes' object stores (a block pulled elsewhere)."""

    return sum(info["object_size"] * (len(info["node_ids"]) - 1) for info in object_locations(blocks).values())


def laplacian(b: np.ndarray) -> np.ndarray:
    out = np.zeros_like(b)
    out[1:-1, 1:-1] = b[:-2, 1:-1] + b[2:, 1:-1] + b[1:-1, :-2] + b[1:-1, 2:] - 4 * b[1:-1, 1:-1]
    return out


def test_map_overlap_moves_only_halos(ray_cluster: Any) -> None:
    seen: dict[str, Any] = {}
    registry = Registry()

    @registry.analytic("stencil")
    def stencil(x: Any, *, step: int) -> Any:
        blocks = block_objects(x)

        def kernel(b: np.ndarray) -> np.ndarray:  # defined here: Ray workers cannot import this test module
            out = np.zeros_like(b)
            out[1:-1, 1:-1] = b[:-2, 1:-1] + b[2:, 1:-1] + b[1:-1, :-2] + b[1:-1, 2:] - 4 * b[1:-1, 1:-1]
            return out

        (energy,) = dask.compute((x.map_overlap(kernel, depth=1, boundary="none") ** 2).sum())
        seen["halo"] = copied_bytes(blocks)
        (full,) = dask.compute(x.rechunk(SHAPE))  # gathers whole blocks in one task
        # the copy's location reaches the block's owner asynchronously: poll it
        deadline = time.monotonic() + 15
        while (whole := copied_bytes(blocks)) < BLOCK and time.monotonic() < deadline:
            time.sleep(0.05)
        seen["whole"] = whole
        seen["ok"] = energy == (laplacian(expected(SHAPE, step)) ** 2).sum() and np.array_equal(
            full, expected(SHAPE, step)
        )
        return float(energy)

    text = """
arrays:
  field: {dtype: float64, shape: [512, 256]}
cadence: {every: 100}
timeouts: {connect: 30, step: 30}
analytics:
  - function: stencil
    arrays: [field]
"""
    run = run_coupled(
        text, [sys.executable, str(SIM), "--steps", "1", "--shape", "512,256"], nranks=2, registry=registry
    )
    assert run.returncode == 0, run.output
    assert seen["ok"], "the distributed stencil equals the global one"
    assert len(set(run.session.state.hello.values())) == 2, "the two blocks live on two nodes"
    assert seen["halo"] == 0, "the stencil copied no block to another node: only halo rows travel"
    assert seen["whole"] >= BLOCK, "gathering whole blocks does copy a block"

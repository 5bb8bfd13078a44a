"""``save`` in a real run: every chunk is written on the node of its block; no block reaches the driver."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from doreisa.testing import run_coupled

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

SIM = Path(__file__).parent / "sims" / "fill.py"
sys.path.insert(0, str(SIM.parent))
from fill import expected  # noqa: E402

SHAPE = (1024, 512)  # four blocks of 1 MiB: above what the driver would compute itself (LOCAL_BYTES)
CONTRACT = f"""
arrays:
  field: {{dtype: float64, shape: [{SHAPE[0]}, {SHAPE[1]}], dims: [y, x]}}
cadence: {{every: 3}}
timeouts: {{connect: 60, step: 60}}
analytics:
  - function: save
    name: snap
    arrays: [field]
"""


def _bytes_in(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, list | tuple):
        return sum(_bytes_in(v) for v in value)
    return 0


def test_snapshots_are_written_where_the_blocks_are(
    ray_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    fetched: list[int] = []
    real_get = ray.get

    def counting_get(refs: Any, *args: Any, **kwargs: Any) -> Any:
        value = real_get(refs, *args, **kwargs)
        fetched.append(_bytes_in(value))  # what this process (the driver) receives from Ray
        return value

    monkeypatch.setattr(ray, "get", counting_get)
    sim = [sys.executable, str(SIM), "--steps", "10", "--shape", f"{SHAPE[0]},{SHAPE[1]}", "--grid", "4,1"]
    run = run_coupled(CONTRACT, sim, nranks=4, output=tmp_path)
    assert run.returncode == 0, run.output
    steps = [0, 3, 6, 9]
    field_bytes = SHAPE[0] * SHAPE[1] * 8
    assert run.values["snap"] == dict.fromkeys(steps, field_bytes), "each step's bytes, counted where written"
    assert sum(fetched) < 1024, f"the driver received {sum(fetched)} bytes of arrays; blocks stay on their nodes"
    with xr.open_zarr(tmp_path / "snapshots" / "snap.zarr") as ds:
        assert ds["snap"].dims == ("step", "y", "x") and ds["step"].values.tolist() == steps
        for i, step in enumerate(steps):
            np.testing.assert_array_equal(ds["snap"][i].values, expected(SHAPE, step))

"""Any block layout on real MPI ranks and a real Ray (#16, item 4): several blocks per rank in a
brick layout, and an array that only some ranks publish, assembled exactly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest

from doreisa.analytics import Registry
from doreisa.contract import load_contract
from doreisa.testing import run_coupled

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "examples" / "tiles" / "sim.py"
sys.path.insert(0, str(SIM.parent))
from sim import density, tracer  # noqa: E402


def test_bricks_and_a_subset_of_ranks_assemble_exactly(ray_cluster: Any) -> None:
    registry = Registry()

    @registry.analytic("whole")
    def whole(x: da.Array) -> Any:
        return x.compute()

    @registry.analytic("chunks")
    def chunks(x: da.Array) -> Any:
        return x.chunks

    text = (ROOT / "examples" / "contracts" / "ranks.yaml").read_text()
    text = text.split("analytics:")[0] + (
        "timeouts: {connect: 60, step: 30}\n"  # ranks start slowly on a loaded machine
        "analytics:\n"
        "  - {function: whole, name: density_all, arrays: [density]}\n"
        "  - {function: chunks, name: density_chunks, arrays: [density]}\n"
        "  - {function: whole, name: tracer_all, arrays: [tracer]}\n"
    )
    run = run_coupled(text, [sys.executable, str(SIM), "--steps", "12"], nranks=4, registry=registry)
    assert run.returncode == 0, run.output
    assert run.session.driver.failures == []
    wanted = [0, 5, 10]
    assert sorted(run.values["density_all"]) == sorted(run.values["tracer_all"]) == wanted
    for step in wanted:
        np.testing.assert_array_equal(run.values["density_all"][step], density(step))
        np.testing.assert_array_equal(run.values["tracer_all"][step], tracer(step))
    # the staggered column cuts (8 and 16) run across the whole grid: 4 x 3 chunks, still regular
    assert run.values["density_chunks"][0] == ((16, 16, 16, 16), (8, 8, 16))
    closed = run.session.state.closed
    # each rank copies 3 chunks of density per wanted step (one of its blocks is crossed by a cut)
    assert [closed[r].published for r in range(4)] == [9, 12, 12, 9]  # + tracer on ranks 1 and 2
    assert sum(closed[r].bytes_copied for r in range(4)) == 3 * (density(0).nbytes + tracer(0).nbytes)
    assert [closed[r].calls for r in range(4)] == [12, 24, 24, 12]  # ranks 0 and 3 never publish tracer
    assert load_contract(ROOT / "examples" / "contracts" / "ranks.yaml").arrays["tracer"].ranks == (1, 2)

"""End to end: real Ray (3 nodes), real mpiexec ranks, exact values."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from doreisa.analytics import Registry
from doreisa.errors import RuntimeUnavailableError
from doreisa.testing import run_coupled, store_back_to, store_stats

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

SIM = Path(__file__).parent / "sims" / "fill.py"
sys.path.insert(0, str(SIM.parent))
from fill import expected  # noqa: E402


def contract(every: int = 3, shape: str = "[16, 16]", window: int = 1, extra: str = "", analytics: str = "") -> str:
    return f"""
arrays:
  field:
    dtype: float64
    shape: {shape}
    window: {window}
cadence: {{every: {every}}}
timeouts: {{connect: 30, step: 30}}
{extra}
analytics:
{
        analytics
        or '''  - function: sum
    arrays: [field]
  - function: mean
    arrays: [field]'''
    }
"""


def sim(*args: str) -> list[str]:
    return [sys.executable, str(SIM), *args]


@pytest.mark.parametrize("nranks", [1, 2, 4])
def test_values_are_exact(ray_cluster: Any, nranks: int) -> None:
    run = run_coupled(contract(every=3), sim("--steps", "20"), nranks=nranks)
    assert run.returncode == 0, run.output
    wanted = list(range(0, 20, 3))
    assert sorted(run.values["sum"]) == wanted
    for step in wanted:
        ref = expected((16, 16), step)
        assert run.values["sum"][step] == ref.sum()
        assert run.values["mean"][step] == pytest.approx(ref.mean(), rel=1e-12)
    assert run.session.driver.failures == []


def test_ranks_spread_over_nodes_and_unwanted_steps_copy_nothing(ray_cluster: Any) -> None:
    run = run_coupled(contract(every=5), sim("--steps", "20"), nranks=4)
    assert run.returncode == 0, run.output
    nodes = set(run.session.state.hello.values())
    assert len(nodes) == 3, "4 ranks over 3 Ray nodes use every node actor"
    counts = run.session.last_node_counts
    assert sum(c.blocks for c in counts) == 4 * 4  # 4 ranks x steps 0, 5, 10, 15
    published = [s.published for s in run.session.state.closed.values()]
    calls = [s.calls for s in run.session.state.closed.values()]
    assert published == [4, 4, 4, 4]
    assert calls == [20, 20, 20, 20]


def test_time_derivative_over_a_window(ray_cluster: Any) -> None:
    text = contract(
        every=2,
        window=2,
        analytics="""  - function: time_derivative
    arrays: [field]""",
    )
    run = run_coupled(text, sim("--steps", "10", "--dt", "0.5"), nranks=2)
    assert run.returncode == 0, run.output
    # value grows by 1 per step, time by 0.5 per step: dT/dt = 2 everywhere
    assert run.values["time_derivative"] == {s: pytest.approx(2.0) for s in (2, 4, 6, 8)}


def test_an_analytic_that_raises_is_reported_and_others_go_on(ray_cluster: Any) -> None:
    registry = Registry()

    @registry.analytic("boom")
    def boom(x: Any, *, step: int) -> Any:
        if step == 6:
            raise ValueError("bad luck at 6")
        return x.max()

    @registry.analytic("total")
    def total(x: Any) -> Any:
        return x.sum()

    text = contract(
        every=3,
        analytics="""  - function: boom
    arrays: [field]
  - function: total
    arrays: [field]""",
    )
    before = store_stats()
    run = run_coupled(text, sim("--steps", "12"), nranks=2, registry=registry)
    assert run.returncode == 0, run.output
    assert sorted(run.values["total"]) == [0, 3, 6, 9]
    assert store_back_to(before)["objects"] <= before["objects"], "a failed call keeps no object"
    assert sorted(run.values["boom"]) == [0, 3, 9]
    (failure,) = run.session.driver.failures
    assert failure.analytic == "boom" and failure.step == 6
    assert "ValueError: bad luck at 6" in failure.error
    assert "raise ValueError" in failure.traceback


def test_ranks_that_never_come_give_a_clear_error(ray_cluster: Any) -> None:
    text = contract().replace("connect: 30", "connect: 2")
    with pytest.raises(RuntimeUnavailableError, match="0 of 2 ranks connected"):
        run_coupled(text, [sys.executable, "-c", "import time; time.sleep(30)"], nranks=2, use_mpi=False)


def test_bad_block_is_rejected_at_the_rank_and_its_steps_reported_lost(ray_cluster: Any) -> None:
    run = run_coupled(contract(every=1), sim("--steps", "5", "--bad", "dtype"), nranks=2)
    assert run.returncode != 0
    assert "BlockMismatchError: rank 0: array 'field' step 1: block dtype is float32; the contract says float64" in (
        run.output
    )
    assert run.session.state.lost_ranks == {0}
    lost = {(e.array, e.step) for e in run.session.state.lost_steps}
    assert ("field", 1) in lost, "rank 1's half of step 1 is never delivered as a step"
    assert sorted(run.values["sum"]) == [0]


def test_memory_is_released_as_steps_leave_the_window(ray_cluster: Any) -> None:
    # 150 steps x 2 blocks x 2 MiB = 600 MiB through 200 MiB stores: only release keeps it from spilling
    before = store_stats()
    run = run_coupled(
        contract(every=1, window=2, shape="[512, 512]"), sim("--steps", "150", "--shape", "512,512"), nranks=2
    )
    assert run.returncode == 0, run.output
    assert len(run.values["sum"]) == 150
    cuts = run.session.cuts  # 2 analytics a step, each graph cut once whatever order or objects the blocks come in
    assert (cuts.hits, cuts.misses) == (298, 2)
    deadline = time.monotonic() + 20  # the store's statistics are refreshed asynchronously
    while (after := store_stats())["objects"] > before["objects"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert after["spilled_mib"] == before["spilled_mib"] == 0
    assert after["objects"] <= before["objects"], after

"""Two ranks (threads) -> Bridge -> NodeServer -> HeadState -> AnalyticsDriver, all in process, no Ray or MPI."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest

from doreisa.analytics import Registry, bind_analytics
from doreisa.contract import parse_contract
from doreisa.runtime.cluster.driver import AnalyticsDriver
from doreisa.runtime.cluster.head import HeadState
from doreisa.runtime.cluster.results import ResultWriter
from doreisa.runtime.protocol import RankJoined, Taken
from doreisa.runtime.rank.bridge import Bridge

Rig = Any  # conftest.Rig
SHAPE = (8, 6)
STEPS = 4


class _Group:
    """What the ranks of a ThreadComm share: one slot each and a barrier."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=10)
        self.slots: list[Any] = [None] * size

    def exchange(self, rank: int, obj: Any) -> list[Any]:
        self.slots[rank] = obj
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out


class ThreadComm:
    """A communicator whose ranks are threads of this process."""

    def __init__(self, group: _Group, rank: int) -> None:
        self._group, self._rank = group, rank

    def Get_rank(self) -> int:
        return self._rank

    def Get_size(self) -> int:
        return self._group.size

    def allgather(self, obj: Any, /) -> list[Any]:
        return self._group.exchange(self._rank, obj)

    def bcast(self, obj: Any, /, root: int = 0) -> Any:
        return self._group.exchange(self._rank, obj)[root]


def _run_ranks(size: int, body: Callable[[ThreadComm], Any]) -> list[Any]:
    group = _Group(size)
    results: list[Any] = [None] * size
    errors: list[BaseException] = []

    def target(rank: int) -> None:
        try:
            results[rank] = body(ThreadComm(group, rank))
        except BaseException as exc:
            errors.append(exc)
            group.barrier.abort()  # the other ranks fail instead of hanging

    threads = [threading.Thread(target=target, args=(rank,), name=f"rank-{rank}") for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not any(t.is_alive() for t in threads), "a rank did not finish"
    if errors:
        raise errors[0]
    return results


def _global(step: int) -> np.ndarray[Any, Any]:
    return np.arange(np.prod(SHAPE), dtype=np.float64).reshape(SHAPE) * (step + 1)


def _publish_all(rig: Rig, rows: list[tuple[int, int]], offsets: bool) -> Callable[[ThreadComm], dict[str, Any]]:
    """Each rank publishes rows ``rows[rank]`` of the global array at every step, settling after each copy."""

    def body(comm: ThreadComm) -> dict[str, Any]:
        rank = comm.Get_rank()
        lo, hi = rows[rank]
        with Bridge(comm, run_dir=rig.run_dir, connect_timeout=5) as bridge:
            for step in range(STEPS):
                offset = (lo, 0) if offsets else None
                bridge.publish("field", _global(step)[lo:hi], step=step, time=step / 2, offset=offset)
                mine = lambda: sum(b.rank == rank for b in rig.blocks()) >= bridge.stats.published  # noqa: E731
                rig.wait(mine, f"rank {rank}'s block")
            return bridge.stats.as_dict()

    return body


def _analyse(text: str, reports: list[Any]) -> tuple[AnalyticsDriver, Taken]:
    registry = Registry()

    @registry.analytic("whole")
    def whole(x: da.Array) -> da.Array:
        return x

    contract = parse_contract(text)
    driver = AnalyticsDriver(
        contract, bind_analytics(contract, registry), results=ResultWriter(None), scheduler=dask.get
    )
    head = HeadState(step_timeout=60)
    head.add(reports)
    taken = head.take(0)
    for step_data in sorted(taken.steps, key=lambda s: s.step):
        driver.deliver(step_data)
    return driver, taken


def _contract(array: str) -> str:
    return f"""
arrays:
  field:
    dtype: float64
    shape: [8, 6]
{array}
analytics:
  - {{function: whole, arrays: [field]}}
"""


CASES = {
    "uniform": ("    block: [4, 6]", [(0, 4), (4, 8)], False, lambda g: g),
    "uneven offsets": ("", [(0, 5), (5, 8)], True, lambda g: g),
    "region across ranks": (
        "    block: [4, 6]\n    select: [{start: 2, stop: 7}, {step: 2}]",
        [(0, 4), (4, 8)],
        False,
        lambda g: g[2:7, ::2],
    ),
    "region on one rank": ("    block: [4, 6]\n    select: [{start: 5}, {}]", [(0, 4), (4, 8)], False, lambda g: g[5:]),
    "downsample": (
        "    block: [4, 6]\n    preprocess: {function: downsample, params: {factor: 3}}",
        [(0, 4), (4, 8)],
        False,
        lambda g: np.concatenate([g[0:4][::3, ::3], g[4:8][::3, ::3]]),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_end_to_end(node: Callable[..., Rig], case: str) -> None:
    array, rows, offsets, expected = CASES[case]
    text = _contract(array)
    rig = node(text)
    stats = _run_ranks(2, _publish_all(rig, rows, offsets))
    rig.wait(lambda: rig.kinds().count("RankClosed") == 2, "both ranks to close")
    assert sum(s["published"] for s in stats) == len(rig.blocks())
    driver, taken = _analyse(text, rig.reports)
    assert taken.partial == 0
    assert [type(e) for e in taken.events].count(RankJoined) == 2
    assert driver.failures == []
    assert sorted(driver.results.values["whole"]) == list(range(STEPS))
    for step in range(STEPS):
        np.testing.assert_array_equal(driver.results.values["whole"][step], expected(_global(step)))


def test_stats_preprocess_end_to_end(node: Callable[..., Rig]) -> None:
    text = _contract("    block: [4, 6]\n    preprocess: stats")
    rig = node(text)
    _run_ranks(2, _publish_all(rig, [(0, 4), (4, 8)], False))
    rig.wait(lambda: rig.kinds().count("RankClosed") == 2, "both ranks to close")
    driver, _ = _analyse(text, rig.reports)
    assert driver.failures == []
    g = _global(1)
    np.testing.assert_array_equal(
        driver.results.values["whole"][1],
        [[[g[:4].min(), g[:4].max(), g[:4].sum(), 24.0]], [[g[4:].min(), g[4:].max(), g[4:].sum(), 24.0]]],
    )

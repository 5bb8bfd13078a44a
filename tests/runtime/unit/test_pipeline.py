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
from doreisa.errors import BlockMismatchError, BridgeError, LayoutError
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
        self._subs: dict[tuple[int, ...], _Group] = {}
        self._lock = threading.Lock()

    def sub(self, ranks: tuple[int, ...]) -> _Group:
        """The group of ``ranks`` (made by the first of them to ask)."""
        with self._lock:
            return self._subs.setdefault(ranks, _Group(len(ranks)))

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

    def Split(self, color: int = 0, key: int = 0) -> ThreadComm:
        """As ``MPI.Comm.Split``: the ranks of each color, ordered by key, in a communicator of their own."""
        chosen = self.allgather((color, key))
        ranks = tuple(r for _, r in sorted((k, r) for r, (c, k) in enumerate(chosen) if c == color))
        return ThreadComm(self._group.sub(ranks), ranks.index(self._rank))


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


# -- several blocks per rank, any tiling, arrays on a subset of the ranks (#16, item 4) ---------

TILES = {
    # rank -> [(rows, cols), ...] of the 8 x 6 field
    "strips": {0: [((0, 2), (0, 6)), ((4, 6), (0, 6))], 1: [((2, 4), (0, 6)), ((6, 8), (0, 6))]},
    # not a rectilinear grid: rank 0's lower block spans the column cut at 3, so it fills two chunks
    "bricks": {0: [((0, 4), (0, 3)), ((4, 8), (0, 6))], 1: [((0, 4), (3, 6))]},
    # a rank with no block at all takes part in the layout and copies nothing
    "one rank holds all": {0: [((0, 8), (0, 3)), ((0, 8), (3, 6))], 1: []},
}


def _publish_tiles(rig: Rig, tiles: dict[int, list[Any]], name: str = "field") -> Callable[[ThreadComm], Any]:
    def body(comm: ThreadComm) -> dict[str, Any]:
        rank = comm.Get_rank()
        mine = tiles[rank]
        offsets = [(r[0], c[0]) for r, c in mine]
        with Bridge(comm, run_dir=rig.run_dir, connect_timeout=5) as bridge:
            for step in range(STEPS):
                g = _global(step)
                blocks = [g[r[0] : r[1], c[0] : c[1]] for r, c in mine]
                bridge.publish_blocks(name, blocks, step=step, offsets=offsets)
                done = lambda: sum(b.rank == rank for b in rig.blocks()) >= bridge.stats.published  # noqa: E731
                rig.wait(done, f"rank {rank}'s blocks")
            return bridge.stats.as_dict()

    return body


@pytest.mark.parametrize("case", list(TILES))
def test_several_blocks_per_rank_assemble_exactly(node: Callable[..., Rig], case: str) -> None:
    text = _contract("")
    rig = node(text)
    stats = _run_ranks(2, _publish_tiles(rig, TILES[case]))
    rig.wait(lambda: rig.kinds().count("RankClosed") == 2, "both ranks to close")
    chunks = {"strips": 4, "bricks": 4, "one rank holds all": 2}[case]
    assert len(rig.blocks()) == sum(s["published"] for s in stats) == chunks * STEPS
    assert sum(s["bytes_copied"] for s in stats) == _global(0).nbytes * STEPS  # every element copied once
    driver, taken = _analyse(text, rig.reports)
    assert taken.partial == 0 and driver.failures == []
    assert sorted(driver.results.values["whole"]) == list(range(STEPS))
    for step in range(STEPS):
        np.testing.assert_array_equal(driver.results.values["whole"][step], _global(step))


def test_bricks_with_a_region_copy_only_the_region(node: Callable[..., Rig]) -> None:
    text = _contract("    select: [{start: 1, stop: 7}, {start: 2, step: 2}]")
    rig = node(text)
    stats = _run_ranks(2, _publish_tiles(rig, TILES["bricks"]))
    rig.wait(lambda: rig.kinds().count("RankClosed") == 2, "both ranks to close")
    assert sum(s["bytes_copied"] for s in stats) == _global(0)[1:7, 2::2].nbytes * STEPS
    driver, _ = _analyse(text, rig.reports)
    assert driver.failures == []
    for step in range(STEPS):
        np.testing.assert_array_equal(driver.results.values["whole"][step], _global(step)[1:7, 2::2])


def test_an_array_on_a_subset_of_the_ranks(node: Callable[..., Rig]) -> None:
    # 3 ranks; 'field' is on ranks 0 and 2 only, in uniform blocks (rank 0 the first, rank 2 the second)
    text = _contract("    block: [4, 6]\n    ranks: [0, 2]")
    rig = node(text)

    def body(comm: ThreadComm) -> dict[str, Any]:
        rank = comm.Get_rank()
        with Bridge(comm, run_dir=rig.run_dir, connect_timeout=5) as bridge:
            for step in range(STEPS):
                if rank == 1:
                    continue  # never calls publish for it, takes part in no collective of it
                lo = 0 if rank == 0 else 4
                bridge.publish("field", _global(step)[lo : lo + 4], step=step)
                done = lambda: sum(b.rank == rank for b in rig.blocks()) >= bridge.stats.published  # noqa: E731
                rig.wait(done, f"rank {rank}'s block")
            if rank == 1:
                with pytest.raises(
                    BlockMismatchError, match=r"rank 1: array 'field' is published by ranks \[0, 2\] only"
                ):
                    bridge.publish("field", _global(0)[:4], step=0)
            return bridge.stats.as_dict()

    stats = _run_ranks(3, body)
    rig.wait(lambda: rig.kinds().count("RankClosed") == 3, "the ranks to close")
    assert [s["published"] for s in stats] == [STEPS, 0, STEPS]
    assert {b.rank for b in rig.blocks()} == {0, 2}
    driver, taken = _analyse(text, rig.reports)
    assert taken.partial == 0 and driver.failures == []
    for step in range(STEPS):
        np.testing.assert_array_equal(driver.results.values["whole"][step], _global(step))


def test_subset_ranks_beyond_the_communicator_are_refused(node: Callable[..., Rig]) -> None:
    rig = node(_contract("    block: [4, 6]\n    ranks: [1, 2]"))

    def body(comm: ThreadComm) -> None:
        with pytest.raises(BridgeError, match=r"array 'field': the contract gives it to ranks \[1, 2\], but the "):
            Bridge(comm, run_dir=rig.run_dir, connect_timeout=5)

    _run_ranks(2, body)


def test_a_changed_block_count_or_overlapping_own_blocks_are_named(node: Callable[..., Rig]) -> None:
    rig = node(_contract(""))

    def body(comm: ThreadComm) -> None:
        rank = comm.Get_rank()
        g = _global(0)
        with Bridge(comm, run_dir=rig.run_dir, connect_timeout=5) as bridge:
            if rank == 0:  # its two blocks overlap: every rank hears it, naming both blocks of rank 0
                blocks, offsets = [g[0:4], g[2:6]], [(0, 0), (2, 0)]
            else:
                blocks, offsets = [g[4:8]], [(4, 0)]
            with pytest.raises(LayoutError, match=r"rank 0's block 0 and rank 0's block 1 publish overlapping"):
                bridge.publish_blocks("field", blocks, step=0, offsets=offsets)

    _run_ranks(2, body)
    rig2 = node(_contract(""))

    def changes(comm: ThreadComm) -> None:
        lo = 4 * comm.Get_rank()
        g = _global(0)
        with Bridge(comm, run_dir=rig2.run_dir, connect_timeout=5) as bridge:
            bridge.publish_blocks("field", [g[lo : lo + 2], g[lo + 2 : lo + 4]], step=0, offsets=[(lo, 0), (lo + 2, 0)])
            with pytest.raises(BlockMismatchError, match=r"step 1: 1 blocks; the first publish gave 2"):
                bridge.publish_blocks("field", [g[lo : lo + 4]], step=1, offsets=[(lo, 0)])

    _run_ranks(2, changes)

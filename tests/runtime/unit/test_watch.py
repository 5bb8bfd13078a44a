"""The deadlines of a run, on a clock moved by hand: what ends a run that would otherwise wait forever."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from doreisa.contract import Timeouts
from doreisa.errors import RuntimeUnavailableError, StallError
from doreisa.runtime.cluster import watch as _watch
from doreisa.runtime.cluster.watch import EXIT_GRACE, RunState, RunWatch, rank_ranges
from doreisa.runtime.protocol import Publishing, RankClosed, RankJoined, RankLost, RankStats, TriggerFailed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(_watch, "time", SimpleNamespace(monotonic=lambda: fake.now))
    return fake


def _joined(n: int, size: int | None = None) -> RunState:
    """Ranks 0 to n-1 of a simulation of ``size`` ranks (default n) have joined."""
    state = RunState()
    for rank in range(n):
        state.record(RankJoined(rank, size or n, "node"))
    return state


def test_a_rank_that_never_enters_the_first_publish_is_named(clock: Clock) -> None:
    watch = RunWatch(Timeouts(step=30), 4, Path("/run"))
    state = _joined(4)
    for rank in (0, 1, 3):  # rank 2 hangs before its first publish; the others wait in the collective
        state.record(Publishing(rank, "field"))
    clock.now += 30
    watch.check(state, alive=True)  # not yet
    clock.now += 1
    with pytest.raises(
        StallError, match=r"ranks \[2\] never called publish\('field'\) while ranks \[0-1, 3\] have waited 31 s"
    ):
        watch.check(state, alive=True)


def test_an_array_on_a_subset_of_the_ranks_waits_only_for_them(clock: Clock) -> None:
    watch = RunWatch(Timeouts(step=30), 4, Path("/run"), {"tracer": (1, 2)})
    state = _joined(4)
    state.record(Publishing(1, "tracer"))
    state.record(Publishing(2, "tracer"))  # ranks 0 and 3 never publish it, as the contract says
    clock.now += 3600
    watch.check(state, alive=True)
    state.record(Publishing(1, "other"))  # an array of every rank: the others are still awaited
    clock.now += 31
    with pytest.raises(StallError, match=r"ranks \[0, 2-3\] never called publish\('other'\) while ranks \[1\]"):
        watch.check(state, alive=True)


def test_ranks_all_busy_elsewhere_are_no_stall(clock: Clock) -> None:
    # a long computation before the first publish: every rank is silent alike
    watch = RunWatch(Timeouts(step=30), 2, Path("/run"))
    state = _joined(2)
    clock.now += 3600
    watch.check(state, alive=True)
    state.record(Publishing(0, "field"))
    state.record(Publishing(1, "field"))
    clock.now += 3600
    watch.check(state, alive=True)


def test_a_rank_that_closed_or_died_is_not_waited_for(clock: Clock) -> None:
    watch = RunWatch(Timeouts(step=30), 3, Path("/run"))
    state = _joined(3)
    state.record(Publishing(0, "field"))
    state.record(RankClosed(1, "node", RankStats()))
    state.record(RankLost(2, "node"))
    clock.now += 60
    watch.check(state, alive=True)


def test_ranks_that_never_connect(clock: Clock) -> None:
    watch = RunWatch(Timeouts(connect=5), 2000, Path("/run"))
    state = _joined(1000, 2000)
    clock.now += 5.5
    with pytest.raises(
        RuntimeUnavailableError,
        match=r"1000 of 2000 ranks connected within timeouts.connect = 5 s \(missing: ranks "
        r"\[1000-1999\]; run folder /run\)",
    ):
        watch.check(state, alive=True)


def test_a_simulation_that_exits_before_its_ranks_connect(clock: Clock) -> None:
    watch = RunWatch(Timeouts(), 2, Path("/run"))
    with pytest.raises(
        RuntimeUnavailableError, match=r"the simulation exited after 1 of 2 ranks connected \(missing: ranks \[1\]\)"
    ):
        watch.check(_joined(1, 2), alive=False)


def test_ranks_of_an_exited_simulation_that_never_closed_are_lost_after_a_grace(clock: Clock) -> None:
    watch = RunWatch(Timeouts(), 3, Path("/run"))
    state = _joined(3)
    state.record(RankClosed(0, "node", RankStats()))
    watch.check(state, alive=False)
    assert state.lost_order == []
    clock.now += EXIT_GRACE + 1
    watch.check(state, alive=False)
    assert state.lost_order == [1, 2] and not watch.finished(state, drained=False)
    assert watch.finished(state, drained=True)


def test_blocks_that_never_come_after_every_rank_closed_end_the_wait(clock: Clock) -> None:
    watch = RunWatch(Timeouts(step=30), 1, Path("/run"))
    state = _joined(1)
    assert not watch.finished(state, drained=False)  # the rank has not closed
    state.record(RankClosed(0, "node", RankStats(published=3)))
    assert not watch.finished(state, drained=False)
    clock.now += 31
    assert watch.finished(state, drained=False)


def test_lost_ranks_keep_the_order_they_went_in() -> None:
    state = _joined(4)
    for rank in (2, 0, 2, 3):
        state.record(RankLost(rank, "node"))
    assert (state.lost_order, state.lost_ranks) == ([2, 0, 3], {0, 2, 3})


def test_a_failing_trigger_is_one_error_updated_with_its_count() -> None:
    state = RunState()
    state.record(TriggerFailed(0, 5, "ExpressionError: division by zero"))
    state.record(TriggerFailed(0, 5, "ExpressionError: division by zero", count=40))
    assert state.errors == [TriggerFailed(0, 5, "ExpressionError: division by zero", count=40)]


def test_a_run_gets_a_private_token_unless_the_user_chose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import sys

    from doreisa.runtime.cluster import private_ray_token

    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.setenv(name, "x")  # so that what the call sets is undone after the test
        monkeypatch.delenv(name)
    monkeypatch.setitem(sys.modules, "ray._raylet", None)
    assert private_ray_token(tmp_path) is None, "Ray imported: too late to choose its token"
    monkeypatch.delitem(sys.modules, "ray._raylet")
    path = private_ray_token(tmp_path)
    assert path == tmp_path / "auth_token" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert len(path.read_text()) == 64
    assert (os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN_PATH"]) == ("token", str(path))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert private_ray_token(tmp_path / "other") is None  # the user's choice stands


@pytest.mark.parametrize(
    ("ranks", "text"),
    [([], "[]"), ([3], "[3]"), ([0, 1], "[0-1]"), ([9, 0, 1, 2, 5, 7, 8], "[0-2, 5, 7-9]"), (range(4096), "[0-4095]")],
)
def test_rank_ranges_stay_short_for_thousands_of_ranks(ranks: list[int], text: str) -> None:
    assert rank_ranges(ranks) == text


def test_processes_that_each_run_alone_are_an_mpi_mismatch() -> None:
    # mpiexec of one MPI launching an mpi4py of another: every process is rank 0 of 1
    watch = RunWatch(Timeouts(), 4, Path("/run"))
    state = RunState()
    state.record(RankJoined(0, 1, "node"))
    state.record(RankJoined(0, 1, "node"))
    with pytest.raises(RuntimeUnavailableError, match=r"2 process\(es\) joined as rank 0 of 1 while the run expects 4"):
        watch.check(state, alive=True)


def test_a_simulation_of_another_size_than_np_is_refused_at_once() -> None:
    watch = RunWatch(Timeouts(), 4, Path("/run"))
    state = RunState()
    state.record(RankJoined(0, 2, "node"))
    with pytest.raises(RuntimeUnavailableError, match=r"communicator of 2 ranks, but the run expects 4 \(--np\)"):
        watch.check(state, alive=True)

"""The head assembles complete steps only; incomplete ones expire into StepLost events."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from doreisa.runtime.cluster import head as _head
from doreisa.runtime.cluster.head import HeadState
from doreisa.runtime.protocol import (
    BlockRecord,
    CompleteStep,
    RankClosed,
    RankJoined,
    RankStats,
    StepDropped,
    StepLost,
    Taken,
)

CHUNKS = ((2, 2), (3,))


def _block(
    step: int,
    index: tuple[int, ...],
    rank: int,
    *,
    array: str = "field",
    n: int = 2,
    ref: str | None = None,
    part: int | None = None,
) -> BlockRecord:
    ref = f"ref-{array}-{step}-{rank}" if ref is None else ref
    return BlockRecord(array, step, step / 10, index, CHUNKS, n, "<f8", rank, "n0", "n0", ref, part)


class Clock:
    """The head's clock, moved by hand: expiry tests do not depend on how loaded the machine is."""

    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(_head, "time", SimpleNamespace(monotonic=lambda: fake.now))
    return fake


def test_step_is_delivered_only_when_complete() -> None:
    head = HeadState(step_timeout=60)
    head.add([_block(0, (0, 0), 0)])
    assert head.take(0) == Taken((), (), 1, head.incarnation)
    head.add([_block(0, (1, 0), 1)])
    out = head.take(0)
    assert out.partial == 0
    assert out.events == ()
    expected = CompleteStep(
        "field",
        0,
        0.0,
        CHUNKS,
        "<f8",
        blocks={(0, 0): "ref-field-0-0", (1, 0): "ref-field-0-1"},
        nodes={(0, 0): "n0", (1, 0): "n0"},  # where each block is, for the scheduler
        parts={},
        hops=out.steps[0].hops,  # when the head had every block (the latency profile's)
    )
    (step,) = out.steps
    assert step == expected
    assert step.hops[2] > 0
    assert head.take(0) == Taken((), (), 0, head.incarnation)  # taken once


def test_steps_and_arrays_are_assembled_separately() -> None:
    head = HeadState(step_timeout=60)
    head.add([_block(1, (0, 0), 0), _block(0, (0, 0), 0), _block(0, (0, 0), 0, array="other")])
    head.add([_block(1, (1, 0), 1)])
    out = head.take(0)
    assert [(s.array, s.step) for s in out.steps] == [("field", 1)]
    assert out.partial == 2
    head.add([_block(0, (1, 0), 1, array="other"), _block(0, (1, 0), 1)])
    assert [(s.array, s.step) for s in head.take(0).steps] == [("other", 0), ("field", 0)]


def test_blocks_stored_together_keep_their_position_in_the_object() -> None:
    head = HeadState(step_timeout=60)
    head.add([_block(0, (1, 0), 1, ref="both", part=0), _block(0, (0, 0), 0, ref="both", part=1)])
    (step,) = head.take(0).steps
    assert step.blocks == {(1, 0): "both", (0, 0): "both"}
    assert step.parts == {(1, 0): 0, (0, 0): 1}


def test_duplicate_block_is_ignored_and_counted() -> None:
    head = HeadState(step_timeout=60)
    head.add([_block(3, (0, 0), 0), _block(3, (0, 0), 0)])
    assert head.duplicates == 1
    assert head.take(0).steps == ()  # two copies of one block are not two blocks
    head.add([_block(3, (1, 0), 1)])
    (step,) = head.take(0).steps
    assert step.blocks == {(0, 0): "ref-field-3-0", (1, 0): "ref-field-3-1"}


def test_events_are_passed_through_in_order() -> None:
    head = HeadState(step_timeout=60)
    events = (RankJoined(0, 2, "n0"), RankClosed(0, "n0", RankStats()))
    head.add([events[0], _block(0, (0, 0), 0), events[1]])
    assert head.take(0) == Taken((), events, 1, head.incarnation)
    assert head.take(0).events == ()


def test_take_waits_until_timeout_when_idle() -> None:
    head = HeadState(step_timeout=60)
    start = time.monotonic()
    assert head.take(0.1) == Taken((), (), 0, head.incarnation)
    assert time.monotonic() - start >= 0.09


def test_take_wakes_up_when_a_step_completes() -> None:
    head = HeadState(step_timeout=60)
    head.add([_block(0, (0, 0), 0)])
    timer = threading.Timer(0.05, head.add, args=([_block(0, (1, 0), 1)],))
    timer.start()
    start = time.monotonic()
    out = head.take(10)
    timer.join()
    assert time.monotonic() - start < 5
    assert [s.step for s in out.steps] == [0]


def test_incomplete_step_expires_into_step_lost(clock: Clock) -> None:
    head = HeadState(step_timeout=0.05)
    head.add([_block(4, (1, 0), 1, n=3), _block(4, (0, 0), 0, n=3)])
    clock.advance(0.04)
    assert head.take(0).events == ()  # not yet
    clock.advance(0.02)
    out = head.take(0)
    assert out == Taken((), (StepLost("field", 4, have=2, expected=3, ranks_seen=(0, 1)),), 0, head.incarnation)
    assert head.take(0).events == ()  # reported once


def test_expired_step_blocks_arriving_late_never_complete_it(clock: Clock) -> None:
    head = HeadState(step_timeout=0.05)
    head.add([_block(4, (0, 0), 0)])
    clock.advance(0.1)
    assert [type(e) for e in head.take(0).events] == [StepLost]
    head.add([_block(4, (1, 0), 1)])  # the straggler starts a new partial, never a half step
    assert head.take(0).steps == ()


def test_flush_drops_incomplete_steps() -> None:
    head = HeadState(step_timeout=60)
    head.add([_block(7, (0, 0), 2), _block(8, (1, 0), 1, array="other"), _block(9, (0, 0), 0), _block(9, (1, 0), 1)])
    lost = head.flush()
    assert sorted(lost, key=lambda e: e.step) == [
        StepLost("field", 7, have=1, expected=2, ranks_seen=(2,)),
        StepLost("other", 8, have=1, expected=2, ranks_seen=(1,)),
    ]
    out = head.take(0)
    assert [s.step for s in out.steps] == [9]  # complete steps are kept
    assert out.partial == 0
    assert head.flush() == []


def test_duplicate_after_completion_is_counted_not_a_new_step() -> None:
    head = HeadState(step_timeout=60)
    head.add([_block(5, (0, 0), 0), _block(5, (1, 0), 1)])
    assert len(head.take(0).steps) == 1
    head.add([_block(5, (0, 0), 0)])  # at-least-once: a copy of a delivered block
    assert head.take(0).partial == 0
    assert head.flush() == []  # no StepLost for a step that was delivered
    assert head.duplicates == 1


def test_a_senders_batches_apply_in_order_whatever_order_they_arrive_in() -> None:
    # the head actor serves calls concurrently: batch 1 of a node may run before its batch 0
    head = HeadState(step_timeout=60)
    head.add([_block(0, (1, 0), 1)], "node-b", 0)
    head.add([_block(2, (0, 0), 0)], "node-a", 1)  # early: held
    head.add([_block(2, (1, 0), 1)], "node-b", 1)
    assert head.take(0).steps == (), "step 2 must not complete before node-a's batch 0 is applied"
    head.add([_block(0, (0, 0), 0)], "node-a", 0)
    assert [s.step for s in head.take(0).steps] == [0, 2]


def test_a_batch_that_never_comes_is_skipped_after_the_step_timeout(clock: Clock) -> None:
    head = HeadState(step_timeout=0.05)
    head.add([_block(3, (0, 0), 0), _block(3, (1, 0), 1)], "node-a", 1)  # batch 0 is lost
    clock.advance(0.04)
    assert head.take(0).steps == ()
    clock.advance(0.02)
    assert [s.step for s in head.take(0).steps] == [3], "expiry applies what waited behind the gap"


def test_policy_latest_keeps_the_newest_complete_steps_and_says_which_it_dropped() -> None:
    head = HeadState(step_timeout=60, keep_latest=2)
    for step in range(5):  # the analytics are busy: nothing is taken meanwhile
        head.add([_block(step, (0,), 0), _block(step, (1,), 1)])
    head.add([_block(0, (0,), 0, array="other")])  # another array's steps do not count against this one's
    head.add([_block(7, (0,), 0)])  # incomplete: never dropped for being waiting
    taken = head.take(timeout=0)
    assert [(s.array, s.step) for s in taken.steps] == [("field", 3), ("field", 4)]
    assert taken.events == tuple(StepDropped("field", s, 2) for s in (0, 1, 2)), "oldest first, never started"
    assert taken.partial == 2


def test_without_policy_latest_every_complete_step_waits() -> None:
    head = HeadState(step_timeout=60)
    for step in range(5):
        head.add([_block(step, (0,), 0), _block(step, (1,), 1)])
    taken = head.take(timeout=0)
    assert [s.step for s in taken.steps] == [0, 1, 2, 3, 4] and taken.events == ()

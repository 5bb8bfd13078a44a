"""A head restarted empty is rebuilt from what the node actors kept: every step analysed once, no event lost.

``ReportLog`` (the node actor's side) and ``HeadState`` are plain logic; the session's part
(dropping steps it already took, acking, the epochs) is played here as ``HeadReader`` does
it. The real thing, with Ray restarting a killed head, is F3 in tests/reliability.
"""

from __future__ import annotations

import random
from typing import Any

from doreisa.runtime.cluster.head import HeadState
from doreisa.runtime.cluster.node import Report
from doreisa.runtime.cluster.rebuild import ReportLog, sender_name
from doreisa.runtime.protocol import BlockRecord, RankClosed, RankJoined, RankStats, StepLost

CHUNKS = ((2, 2), (3,))


def _block(step: int, rank: int, array: str = "field") -> BlockRecord:
    return BlockRecord(array, step, None, (rank, 0), CHUNKS, 2, "<f8", rank, "n0", "n0", f"ref-{array}-{step}-{rank}")


class Link:
    """One node actor's batches to whichever head is current; a call 'in flight' when the head dies is lost."""

    def __init__(self, name: str) -> None:
        self.sender = sender_name(name)
        self.head: HeadState | None = None
        self.lose_next = 0  # calls that never reach the head (it died with them)
        self.log = ReportLog(self._send)

    def _send(self, batch: list[Report], seq: int, epoch: int) -> None:
        if self.lose_next:
            self.lose_next -= 1
        elif self.head is not None:
            self.head.add(batch, self.sender, seq, epoch)


class Session:
    """What the session does with the head (``HeadReader``), without Ray."""

    def __init__(self, links: list[Link]) -> None:
        self.links = links
        self.head = HeadState(step_timeout=60)
        self.epoch = 0
        self.acked: dict[str, int] = {}
        self.settled: set[tuple[str, int]] = set()
        self.analysed: list[tuple[str, int]] = []
        self.events: list[Any] = []
        for link in links:
            link.head = self.head

    def poll(self) -> None:
        taken = self.head.take(0)
        self.events += taken.events
        for step in taken.steps:
            key = (step.array, step.step)
            if key in self.settled:
                continue
            self.analysed.append(key)
            assert len(step.blocks) == 2, "never half a step"
            self.settled.add(key)
            for link in self.links:
                link.log.settle([key])
        for event in taken.events:
            if isinstance(event, StepLost):
                self.settled.add((event.array, event.step))
        self.acked.update(taken.applied)
        for link in self.links:
            link.log.ack(self.epoch, self.acked.get(link.sender, 0))

    def restart_head(self, *, new: bool = True) -> None:
        """Ray restarts the head: a new, empty one; the session rebuilds it (``new=False``: the same head, which
        the session only could not reach for a moment: a rebuild must be as right)."""
        self.head = HeadState(step_timeout=60) if new else self.head
        for link in self.links:
            link.head = self.head
        self.epoch += 1
        self.head.rebuild(self.epoch)
        for link in self.links:
            link.log.resend(self.epoch, self.acked.get(link.sender, 0))
        self.acked = {}


def test_a_restarted_head_gets_back_the_steps_in_flight_and_the_events_not_taken() -> None:
    link = Link("n0")
    session = Session([link])
    joined = [RankJoined(0, 2, "n0"), RankJoined(1, 2, "n0")]
    link.log.report([joined[0], joined[1], _block(0, 0), _block(0, 1)])
    session.poll()
    assert session.analysed == [("field", 0)]
    assert session.events == joined
    link.log.report([_block(1, 0)])  # step 1 half there when the head dies
    link.lose_next = 1
    link.log.report([_block(1, 1), _block(2, 0)])  # lost with the head
    closed = RankClosed(1, "n0", RankStats())
    link.log.report([closed])  # to the restarted head before it is rebuilt: dropped there, sent again
    assert link.log.kept == (1, 2)  # the batch whose event was not taken; steps 1 and 2, not analysed
    session.restart_head()
    link.log.report([_block(2, 1)])
    session.poll()
    assert session.analysed == [("field", 0), ("field", 1), ("field", 2)]
    assert session.events == [*joined, closed]  # once each
    assert link.log.kept == (0, 0)


def test_batches_sent_before_the_rebuild_count_once_and_a_second_restart_works_the_same() -> None:
    link = Link("n0")
    session = Session([link])
    link.log.report([_block(0, 0)])
    stale = session.head
    session.restart_head()
    stale.add([_block(0, 1)], link.sender, 1, 0)  # a late call to the dead head changes nothing
    session.head.add([_block(0, 1)], link.sender, 1, 0)  # an old epoch's batch to the new one: dropped
    assert session.head.stale == 1
    session.poll()
    assert session.analysed == []
    session.restart_head()
    link.log.report([_block(0, 1)])
    session.poll()
    assert session.analysed == [("field", 0)]
    assert session.head.duplicates == 0


def test_a_step_taken_before_the_restart_and_not_yet_settled_is_analysed_once() -> None:
    link = Link("n0")
    session = Session([link])
    link.log.report([_block(0, 0), _block(0, 1)])
    taken = session.head.take(0)  # the session took step 0; the node has not yet heard it is done
    assert [s.step for s in taken.steps] == [0]
    session.analysed.append(("field", 0))
    session.settled.add(("field", 0))
    session.restart_head()
    session.poll()
    assert session.analysed == [("field", 0)]  # it came again from the node, and was dropped


def test_random_restarts_and_lost_calls_every_step_analysed_once_in_order_and_every_event_once() -> None:
    for seed in range(60):
        rng = random.Random(seed)
        links = [Link("n0"), Link("n1")]  # rank 0 on n0, rank 1 on n1
        session = Session(links)
        sent_events, dying = [], False
        for step in range(30):
            for rank, link in enumerate(links):
                event = RankJoined(rank, step, f"n{rank}")  # any event, told apart by its fields
                sent_events.append(event)
                link.log.report([_block(step, rank), event])
            if dying:  # the head died with the calls in flight (lost), and Ray restarted it
                if rng.random() < 0.5:  # the session took what had come before it died
                    session.poll()
                for link in links:
                    link.lose_next = 0
                session.restart_head(new=rng.random() < 0.7)
            if rng.random() < 0.3:
                session.poll()
            dying = rng.random() < 0.15
            if dying:
                rng.choice(links).lose_next = rng.randint(1, 2)
        for link in links:
            link.lose_next = 0
        session.poll()
        session.restart_head()  # whatever was lost in flight at the end comes back
        session.poll()
        assert session.analysed == [("field", s) for s in range(30)], seed
        assert sorted(session.events, key=lambda e: (e.size, e.rank)) == sent_events, seed
        assert [link.log.kept for link in links] == [(0, 0), (0, 0)], seed

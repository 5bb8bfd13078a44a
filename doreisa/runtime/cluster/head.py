"""The head: gathers block references from the node actors until a step of an array is complete.

:class:`HeadState` is plain logic (tested without Ray); the runtime runs it as a threaded
Ray actor. Node actors call :meth:`HeadState.add`; the analytics driver long-polls
:meth:`HeadState.take`. The actor serves several calls at once, so one node actor's batches
may run out of order: each carries a sequence number and is applied in order, which keeps
a rank's blocks (and events) in the order it published them, so the steps of an array
complete in step order. A step is delivered complete or not at all: a step still missing
blocks after ``step_timeout`` seconds is dropped, its blocks released, and reported lost.

Ray restarts the head actor if it dies (``max_restarts``), empty: the session then calls
:meth:`HeadState.rebuild` with a new epoch, and every node actor sends again what the head held
(the blocks of the steps not yet analysed, the events not yet taken), in batches of that epoch;
batches of an older epoch are dropped (:mod:`doreisa.runtime.cluster.rebuild`).
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from dataclasses import dataclass, field
from time import time as wall_clock  # the latency profile's hops, comparable across processes
from typing import Any

from doreisa.runtime.protocol import BlockRecord, CompleteStep, Event, StepDropped, StepLost, Taken


class RecentKeys:
    """The last ``size`` (array, step) added, for membership tests: a late copy must not count again."""

    def __init__(self, size: int = 4096) -> None:
        self._order: collections.deque[tuple[str, int]] = collections.deque(maxlen=size)
        self._keys: set[tuple[str, int]] = set()

    def add(self, key: tuple[str, int]) -> None:
        if len(self._order) == self._order.maxlen:
            self._keys.discard(self._order[0])
        self._order.append(key)
        self._keys.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def clear(self) -> None:
        self._order.clear()
        self._keys.clear()


@dataclass
class _Partial:
    array: str
    step: int
    time: float | None
    chunks: tuple[tuple[int, ...], ...]
    n: int
    dtype: str
    first_seen: float
    blocks: dict[tuple[int, ...], Any] = field(default_factory=dict[tuple[int, ...], Any])
    nodes: dict[tuple[int, ...], str] = field(default_factory=dict[tuple[int, ...], str])
    # a block stored with others of its step in one object: its position in that object
    parts: dict[tuple[int, ...], int] = field(default_factory=dict[tuple[int, ...], int])
    ranks: set[int] = field(default_factory=set[int])
    tags: int = 0
    seen: float = 0.0  # the latest block's hops (BlockRecord.seen, .stored)
    stored: float = 0.0


class HeadState:
    """Step assembly and run events (ranks arriving, closing, lost)."""

    def __init__(self, *, step_timeout: float, keep_latest: int | None = None) -> None:
        self._step_timeout = step_timeout
        #: backpressure.policy latest: at most this many complete steps of an array wait for the analytics
        self._keep = keep_latest
        self._cond = threading.Condition()
        self._partial: dict[tuple[str, int], _Partial] = {}
        self._ready: list[CompleteStep] = []
        self._events: list[Event] = []
        self.duplicates = 0
        # recently completed steps: a late duplicate must not open a new (never complete) step
        self._done = RecentKeys()
        # per sender: the next sequence number to apply, and batches that came early (with when)
        self._next_seq: dict[str, int] = {}
        self._early: dict[str, dict[int, tuple[list[BlockRecord | Event], float]]] = {}
        #: new at every start: the session tells a head that Ray restarted (empty) by it
        self.incarnation = uuid.uuid4().hex
        self._epoch = 0  # batches of another epoch were sent before the head's latest rebuild: dropped
        self.stale = 0

    def add(
        self, batch: list[BlockRecord | Event], sender: str | None = None, seq: int | None = None, epoch: int = 0
    ) -> None:
        """Record blocks and events from a node actor: its ``seq``-th batch (0, 1, ...) of ``epoch``, if numbered."""
        with self._cond:
            if epoch != self._epoch:
                self.stale += 1  # sent again, in the rebuild's epoch, by its node actor
                return
            if sender is None or seq is None:
                self._apply(batch)
            else:
                self._early.setdefault(sender, {})[seq] = (batch, time.monotonic())
                self._apply_in_order(sender, skip_gap=False)
            self._cond.notify_all()

    def _apply_in_order(self, sender: str, *, skip_gap: bool) -> None:
        early, seq = self._early[sender], self._next_seq.get(sender, 0)
        while early:
            if seq not in early:
                if not skip_gap:
                    break
                seq = min(early)  # a batch that never came (its sender died mid-call): go on without it
            self._apply(early.pop(seq)[0])
            seq += 1
        self._next_seq[sender] = seq

    def _apply(self, batch: list[BlockRecord | Event]) -> None:
        for item in batch:
            if isinstance(item, BlockRecord):
                self._add_block(item)
            else:
                self._events.append(item)

    def _add_block(self, item: BlockRecord) -> None:
        key = (item.array, item.step)
        if key in self._done:
            self.duplicates += 1
            return
        partial = self._partial.get(key)
        if partial is None:
            partial = _Partial(
                item.array, item.step, item.time, item.chunks, item.nblocks, item.dtype, time.monotonic()
            )
            self._partial[key] = partial
        if item.index in partial.blocks:
            self.duplicates += 1  # at-least-once delivery must not count a block twice
            return
        partial.blocks[item.index] = item.ref
        partial.nodes[item.index] = item.where
        if item.part is not None:
            partial.parts[item.index] = item.part
        partial.ranks.add(item.rank)
        partial.tags |= item.tags  # the same on every rank: each applies a decision at the same step
        partial.seen, partial.stored = max(partial.seen, item.seen), max(partial.stored, item.stored)
        if len(partial.blocks) == partial.n:
            del self._partial[key]
            self._done.add(key)
            self._make_room(partial.array)
            self._ready.append(
                CompleteStep(
                    partial.array,
                    partial.step,
                    partial.time,
                    partial.chunks,
                    partial.dtype,
                    partial.blocks,
                    partial.nodes,
                    partial.parts,
                    partial.tags,
                    (partial.seen, partial.stored, wall_clock()),
                )
            )

    def _make_room(self, array: str) -> None:
        """Policy latest: drop the oldest waiting step of ``array`` once ``keep`` are waiting (its refs go)."""
        if self._keep is None:
            return
        waiting = [i for i, s in enumerate(self._ready) if s.array == array]
        if len(waiting) >= self._keep:
            dropped = self._ready.pop(waiting[0])
            self._events.append(StepDropped(dropped.array, dropped.step, len(dropped.blocks)))

    def take(self, timeout: float) -> Taken:
        """Wait up to ``timeout`` s for complete steps or events; return and forget them."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._ready or self._events), timeout=timeout)
            self._expire()
            out = Taken(
                tuple(self._ready), tuple(self._events), len(self._partial), self.incarnation, dict(self._next_seq)
            )
            self._ready, self._events = [], []
            return out

    def rebuild(self, epoch: int) -> str:
        """Forget everything and take only batches of ``epoch`` from now on; return the incarnation.

        The node actors then send again, numbered from 0 in ``epoch``, every block of the steps
        not yet analysed and every event the session has not taken, so the state is rebuilt
        whether this head was restarted empty or only missed some calls.
        """
        with self._cond:
            self._epoch = epoch
            self._partial.clear()
            self._ready, self._events = [], []
            self._done.clear()
            self._next_seq.clear()
            self._early.clear()
            return self.incarnation

    def flush(self) -> list[StepLost]:
        """Drop every incomplete step now (end of run); return the 'lost' events."""
        with self._cond:
            lost = [self._lost_event(p) for p in self._partial.values()]
            self._partial.clear()
            return lost

    def _expire(self) -> None:
        now = time.monotonic()
        for sender, early in self._early.items():
            if early and now - min(when for _, when in early.values()) > self._step_timeout:
                self._apply_in_order(sender, skip_gap=True)
        for key, partial in list(self._partial.items()):
            if now - partial.first_seen > self._step_timeout:
                del self._partial[key]
                self._events.append(self._lost_event(partial))

    @staticmethod
    def _lost_event(partial: _Partial) -> StepLost:
        return StepLost(partial.array, partial.step, len(partial.blocks), partial.n, tuple(sorted(partial.ranks)))

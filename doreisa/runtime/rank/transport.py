"""A rank's link to its node actor: the Unix socket, the shared memory rings, the steps in flight.

Used by :class:`doreisa.runtime.rank.bridge.Bridge`; like it, this module never imports ray or dask.
A wanted block is copied into a slot of its array's ring and posted in the ring's header
(a ``wake`` record on the socket only if the node actor sleeps); the node actor copies the
slot into Ray and bumps the slot's counter in the header, so the rank sees free slots without
reading the socket. The node actor also says which steps the analytics have finished
(``done``): what backpressure counts.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from doreisa.contract import ArraySpec, Backpressure
from doreisa.errors import BridgeError
from doreisa.plugins import Preprocessor
from doreisa.runtime import _names
from doreisa.runtime.cadence import ArraySchedule
from doreisa.runtime.layout import BlockPlan, Layout
from doreisa.runtime.protocol import (
    WAKE,
    Close,
    Done,
    Free,
    Malformed,
    MessageReader,
    NodeMessage,
    RankMessage,
    RankStats,
    RingOpened,
    encode,
    recv_one,
)
from doreisa.runtime.ring import ASLEEP, NAN, POSTS, ShmRing, fence, slot_bytes

log = logging.getLogger("doreisa.bridge")

#: A ring has at least this many slots (if ``max_in_flight`` allows), whatever its blocks' size,
#: and at most this many (each slot costs a view on both sides and a counter).
MIN_RING_SLOTS, MAX_RING_SLOTS = 4, 1024
#: Read the socket at least every this many copies, so that the node actor's wake-ups never pile up.
DRAIN_EVERY = 32


def ring_slots(slot_size: int, max_in_flight: int, staging_bytes: int) -> int:
    """Slots of a rank's ring: as many as ``staging_bytes`` holds, within the ring's bounds.

    Never more than ``max_in_flight``: a slot is busy only while its step is in flight.
    """
    return min(max_in_flight, MAX_RING_SLOTS, max(MIN_RING_SLOTS, staging_bytes // slot_size))


@dataclass
class ArrayState:
    """One array of the contract, as one rank publishes it."""

    name: str
    ring_id: int
    spec: ArraySpec
    schedule: ArraySchedule
    preprocess: Preprocessor | None
    last_step: int = -1
    box: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    layout: Layout | None = None
    plan: BlockPlan | None = None
    whole: bool = False  # the plan copies the rank's whole block: no view of a part to make
    out_shape: tuple[int, ...] = ()
    out_dtype: np.dtype[Any] | None = None
    ring: ShmRing | None = None
    #: a view of each slot; the free slots (the last one freed is reused first: its lines are still
    #: cached); the slots handed to the node actor, in order
    views: list[np.ndarray[Any, Any]] = field(default_factory=list[np.ndarray[Any, Any]])
    free: list[int] = field(default_factory=list[int])
    pending: list[int] = field(default_factory=list[int])
    index: tuple[int, ...] = ()
    #: a step-count cadence that nothing can change: its period and last wanted step (0: none such)
    stride: int = 0
    last_wanted: float = math.inf
    #: steps below this are known unwanted, and this one wanted (when ``stride``)
    skip_below: int = -1

    def __post_init__(self) -> None:
        self.dtype = np.dtype(self.spec.dtype)

    def reclaim(self) -> bool:
        """Move the slots the node actor has taken (its count caught up with ours) to ``free``; any free?"""
        if not self.pending or self.ring is None:
            return bool(self.free)
        freed, used, last = self.ring.freed, self.ring.posted, self.pending[-1]
        if self.free and freed[last] != used[last]:
            return True  # the node takes slots in order: the last one handed over not taken yet, skip the scan
        still: list[int] = []
        for s in self.pending:  # in order: the last one handed over ends on top of ``free``
            (self.free if freed[s] == used[s] else still).append(s)
        self.pending = still
        return bool(self.free)

    def idle(self) -> bool:
        """Has the node actor taken every slot handed to it?"""
        self.reclaim()
        return not self.pending

    def out_chunks(self) -> tuple[tuple[int, ...], ...]:
        """The chunks of the array the analytics see (after preprocess)."""
        assert self.layout is not None
        chunks = self.layout.chunks
        if self.preprocess is not None:
            chunks = self.preprocess.chunks_of(chunks)
        return tuple(tuple(c) for c in chunks)

    def close_ring(self) -> None:
        if self.ring is not None:
            self.views = []
            self.ring.close(unlink=True)


class NodeLink:
    """The connection of one rank to its node actor; once lost (``detached``), nothing more is sent.

    ``on_done(items, decisions)`` receives what the node actor says the analytics finished;
    ``on_detach()`` is called once, when the link is lost.
    """

    def __init__(
        self,
        sock: socket.socket,
        rank: int,
        *,
        on_done: Callable[[Done], None],
        on_detach: Callable[[], None],
    ) -> None:
        self._sock = sock
        self._rank = rank
        self._on_done = on_done
        self._on_detach = on_detach
        self._reader = MessageReader(NodeMessage | Free)
        self._since_drain = 0
        #: ``wake`` records sent (a post that found the node actor asleep)
        self.wakes = 0
        #: the steps handed over and not yet analysed, with the arrays still due
        self.in_flight: dict[int, set[str]] = {}
        self.detached: str | None = None

    def open_ring(self, state: ArrayState, run_dir: Path, backpressure: Backpressure) -> None:
        """Create the array's ring in shared memory and tell the node actor how to read it."""
        assert state.out_dtype is not None and state.layout is not None and state.plan is not None
        size = slot_bytes(int(np.prod(state.out_shape)) * state.out_dtype.itemsize)
        # a burst of steps faster than the node actor ingests them fills the ring before publish waits
        slots = ring_slots(size, backpressure.max_in_flight, backpressure.staging_mb << 20)
        base = _names.SHM_DIR if os.path.isdir(_names.SHM_DIR) else str(run_dir)
        path = os.path.join(base, f"{_names.SHM_PREFIX}{run_dir.name}-{self._rank}-{state.name}")
        state.ring = ShmRing(path, slots, size, create=True)
        state.views = state.ring.views(state.out_shape, state.out_dtype)
        state.free = list(range(slots - 1, -1, -1))
        # preprocess may add dims
        state.index = state.plan.index + (0,) * (len(state.out_shape) - len(state.plan.index))
        self.send(
            RingOpened(
                state.name,
                state.ring_id,
                state.index,
                path,
                slots,
                size,
                state.out_shape,
                state.out_dtype.str,
                state.out_chunks(),
                state.layout.nchunks,
            )
        )

    def label(self, state: ArrayState, slot: int, step: int, time: float | None) -> ShmRing:
        """Write the step and time of the block about to be copied into ``slot``; the slot's ring.

        Before the copy: the copy of a large block evicts the caches, and what follows it runs cold.
        """
        ring = state.ring
        assert ring is not None
        ring.steps[slot] = step
        ring.times[slot] = NAN if time is None else time
        self.in_flight.setdefault(step, set()).add(state.name)
        state.pending.append(slot)
        return ring

    def post(self, ring: ShmRing, slot: int) -> bool:
        """Hand a labelled and written slot over; wake the node actor if it sleeps. False if the link is lost."""
        ring.posted[slot] += 1
        ring.control[POSTS] += 1
        fence()  # the post is visible before ``asleep`` is read: a node going to sleep sees it, or we see it asleep
        if ring.control[ASLEEP]:
            self.wakes += 1
            return self.send_bytes(WAKE)
        return True

    def drain_due(self) -> bool:
        """Count a copy; True every ``DRAIN_EVERY`` copies."""
        self._since_drain += 1
        return self._since_drain >= DRAIN_EVERY

    def drain(self) -> None:
        """Handle what the node actor has sent, without waiting."""
        self._since_drain = 0
        for message in self._reader.feed(b""):  # left over from recv_one
            self._handle(message)
        while True:
            try:
                data = self._sock.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.detach(f"lost the node actor: {exc}")
                return
            if not data:
                self.detach("the node actor closed the connection")
                return
            for message in self._reader.feed(data):
                self._handle(message)

    def _handle(self, message: NodeMessage | Free | Malformed) -> None:
        if isinstance(message, Malformed):  # another doreisa version on the other side: nothing it says is safe
            self.detach(f"the node actor sent a message this rank cannot read: {message.error}")
        elif isinstance(message, Done):  # (Free only wakes a rank waiting for a slot: the counters say which)
            self._on_done(message)
            for name, step in message.items:
                pending = self.in_flight.get(step)
                if pending is not None:
                    pending.discard(name)
                    if not pending:
                        del self.in_flight[step]

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Handle the node actor's messages until ``condition()``; BridgeError after ``timeout`` s."""
        deadline = _time.monotonic() + timeout
        while not condition():
            if self.detached is not None:
                raise BridgeError(f"rank {self._rank}: lost the node actor while waiting for {what}: {self.detached}")
            remaining = deadline - _time.monotonic()
            if remaining <= 0:
                raise BridgeError(f"rank {self._rank}: waited {timeout:g} s for {what}; the analytics do not respond")
            try:
                self._handle(recv_one(self._sock, self._reader, min(remaining, 1.0)))
            except TimeoutError:
                continue
            except (EOFError, OSError) as exc:
                raise BridgeError(f"rank {self._rank}: lost the node actor while waiting for {what}: {exc}") from exc
            self.drain()

    def send(self, message: RankMessage) -> bool:
        """Send a message unless the link is lost; False if it was not sent."""
        return self.send_bytes(encode(message))

    def send_bytes(self, frame: bytes) -> bool:
        if self.detached is not None:
            return False
        try:
            self._sock.sendall(frame)
        except OSError as exc:
            self.detach(f"lost the node actor: {exc}")
            return False
        return True

    def detach(self, reason: str) -> None:
        """Give up on the analytics: the simulation goes on, and what it publishes is dropped and counted."""
        if self.detached is None:
            self.detached = reason
            self._on_detach()
            log.warning(
                "rank %d: analytics unavailable (%s); the simulation goes on and further steps are dropped and counted",
                self._rank,
                reason,
            )

    def close(self, idle: Callable[[], bool], timeout: float, stats: RankStats) -> None:
        """Wait until the node actor has taken every block (``idle()``), send the rank's counts, disconnect."""
        if self.detached is None:
            try:
                self.wait(idle, timeout, "the node actor to take the last blocks")
                self._sock.sendall(encode(Close(self._rank, stats)))
            except (OSError, BridgeError) as exc:
                log.warning("rank %d: close() could not confirm the hand-over: %s", self._rank, exc)
        self._sock.close()

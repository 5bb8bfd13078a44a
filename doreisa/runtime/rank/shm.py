"""The transport of ``doreisa run``: a shared memory ring per array, and a Unix socket to the node actor.

A wanted block is copied into a slot of its array's ring and posted in the ring's header (a
``wake`` record on the socket only if the node actor sleeps); the node actor copies the slot
into Ray and bumps the slot's counter in the header, so the rank sees free slots without
reading the socket (a socket read right after a simulation step costs far more than a memory
read: docs/performance.md). The node actor also says which steps the analytics have finished
(``Done``): what backpressure counts.

Like every rank-side module, this one never imports ray or dask.
"""

from __future__ import annotations

import logging
import os
import socket
import time as _time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from doreisa.errors import BridgeError
from doreisa.runtime import _names
from doreisa.runtime.plan import BackpressurePlan
from doreisa.runtime.protocol import Close, Done, NodeMessage, RankMessage, RankStats, RingOpened, Welcome
from doreisa.runtime.rank.arrays import BlockCopy, RankArray
from doreisa.runtime.rank.discovery import connect_to_node
from doreisa.runtime.ring import ASLEEP, NAN, POSTS, ShmRing, fence, slot_bytes
from doreisa.runtime.store import warn_if_over_store
from doreisa.runtime.wire import WAKE, Free, Malformed, MessageReader, encode, recv_one

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


class RingStaging:
    """An array's ring as the rank writes it: a view of each slot, the free slots, the posted ones.

    The last slot freed is reused first: its lines are still cached.
    """

    __slots__ = ("_link", "_slot", "free", "posted", "ring", "views")

    def __init__(self, link: ShmTransport, ring: ShmRing, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self._link = link
        self.ring = ring
        self.views = ring.views(shape, dtype)
        self.free = list(range(ring.slots - 1, -1, -1))
        self.posted: list[int] = []  # handed to the node actor, in order
        self._slot = -1

    def has_slot(self) -> bool:
        """Move the slots the node actor has taken (its count caught up with ours) to ``free``; any free?"""
        if not self.posted:
            return bool(self.free)
        freed, used, last = self.ring.freed, self.ring.posted, self.posted[-1]
        if self.free and freed[last] != used[last]:
            return True  # the node takes slots in order: the last one handed over not taken yet, skip the scan
        still: list[int] = []
        for s in self.posted:  # in order: the last one handed over ends on top of ``free``
            (self.free if freed[s] == used[s] else still).append(s)
        self.posted = still
        return bool(self.free)

    def reserve(self, step: int, time: float | None, tags: int = 0) -> np.ndarray[Any, Any]:
        slot = self._slot = self.free.pop()
        ring = self.ring
        ring.steps[slot] = step
        ring.times[slot] = NAN if time is None else time
        ring.tags[slot] = tags
        self.posted.append(slot)
        return self.views[slot]

    def post(self) -> bool:
        ring, slot = self.ring, self._slot
        ring.posted[slot] += 1
        ring.control[POSTS] += 1
        fence()  # the post is visible before ``asleep`` is read: a node going to sleep sees it, or we see it asleep
        if ring.control[ASLEEP]:
            self._link.wakes += 1
            if not self._link.send_bytes(WAKE):  # the node actor is gone: the slot will never be taken
                self.posted.pop()
                return False
        return True

    def idle(self) -> bool:
        self.has_slot()
        return not self.posted

    def pending(self) -> int:
        return len(self.posted)

    def close(self) -> None:
        self.views = []
        self.ring.close(unlink=True)


class ShmTransport:
    """One rank's socket to its node actor, and its rings; see :class:`~doreisa.runtime.rank.transport.Transport`."""

    def __init__(self, sock: socket.socket, welcome: Welcome, run_dir: Path) -> None:
        self._sock = sock
        self.welcome = welcome
        self._run_dir = run_dir
        self._rank = -1
        self._on_done: Callable[[Done], None] = lambda done: None
        self._on_detach: Callable[[], None] = lambda: None
        self._reader = MessageReader(NodeMessage | Free)
        self._since_drain = 0
        self._rings: list[RingStaging] = []
        self.wakes = 0
        self.detached: str | None = None

    @classmethod
    def connect(cls, run_dir: Path, hosts: list[str], rank: int, timeout: float) -> ShmTransport:
        """Find the node actor of this rank's host in ``run_dir`` and say hello (``hosts``: every rank's)."""
        local_index = sum(1 for h in hosts[:rank] if h == hosts[rank])
        sock, welcome = connect_to_node(run_dir, hosts[rank], local_index, rank, len(hosts), timeout)
        return cls(sock, welcome, run_dir)

    def bind(self, *, rank: int, on_done: Callable[[Done], None], on_detach: Callable[[], None]) -> None:
        self._rank, self._on_done, self._on_detach = rank, on_done, on_detach

    def open(self, array: RankArray, copy: BlockCopy, backpressure: BackpressurePlan) -> RingStaging:
        """Create the array's ring in shared memory and tell the node actor how to read it."""
        nbytes = copy.nbytes
        warn_if_over_store(self._rank, array.name, nbytes, self.welcome.store_bytes, backpressure.max_store_fraction)
        size = slot_bytes(nbytes)
        # a burst of steps faster than the node actor ingests them fills the ring before publish waits
        slots = ring_slots(size, backpressure.max_in_flight, backpressure.staging_mb << 20)
        base = _names.SHM_DIR if os.path.isdir(_names.SHM_DIR) else str(self._run_dir)
        suffix = "" if copy.ring == array.ring_id else f"-{copy.ring}"  # a rank's other chunks of the array
        path = os.path.join(base, f"{_names.SHM_PREFIX}{self._run_dir.name}-{self._rank}-{array.name}{suffix}")
        staging = RingStaging(self, ShmRing(path, slots, size, create=True), copy.shape, copy.dtype)
        self._rings.append(staging)
        opened = RingOpened(
            array.name,
            copy.ring,
            copy.index,
            path,
            slots,
            size,
            copy.shape,
            copy.dtype.str,
            copy.chunks,
            copy.nblocks,
        )
        self.send(opened)
        return staging

    def poll(self, *, now: bool = True) -> None:
        """Handle what the node actor has sent, without waiting (with ``now=False``, every ``DRAIN_EVERY`` calls)."""
        self._since_drain += 1
        if not now and self._since_drain < DRAIN_EVERY:
            return
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

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
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
            self.poll()

    def send(self, message: RankMessage) -> bool:
        return self.send_bytes(encode(message))

    def send_bytes(self, frame: bytes) -> bool:
        """Send a framed message unless the link is lost; False if it was not sent."""
        if self.detached is not None:
            return False
        try:
            self._sock.sendall(frame)
        except OSError as exc:
            self.detach(f"lost the node actor: {exc}")
            return False
        return True

    def detach(self, reason: str) -> None:
        if self.detached is None:
            self.detached = reason
            self._on_detach()
            log.warning(
                "rank %d: analytics unavailable (%s); the simulation goes on and further steps are dropped and counted",
                self._rank,
                reason,
            )

    def close(self, stats: RankStats, timeout: float) -> tuple[int, int]:
        if self.detached is None:
            try:
                self.wait(lambda: all(r.idle() for r in self._rings), timeout, "the node actor to take the last blocks")
                self._sock.sendall(encode(Close(self._rank, stats)))
            except (OSError, BridgeError) as exc:
                log.warning("rank %d: close() could not confirm the hand-over: %s", self._rank, exc)
        self._sock.close()
        lost = [(r.pending(), r.pending() * r.views[0].nbytes) for r in self._rings if not r.idle()]
        for ring in self._rings:
            ring.close()
        return sum(n for n, _ in lost), sum(b for _, b in lost)

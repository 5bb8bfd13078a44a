"""A node actor's view of each rank: its connection, its rings, and the blocks it posted.

The node actor maps each ring a rank announces (:class:`RankRing`), reads its header to find
new posts (:meth:`RankRing.collect`), and keeps each post as a :class:`PostedSlot` until the
block is copied out into Ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from doreisa.runtime.protocol import Done, RankMessage, RingOpened, Welcome
from doreisa.runtime.ring import ASLEEP, POSTS, ShmRing
from doreisa.runtime.wire import MessageReader, Wake, encode

log = logging.getLogger("doreisa.node")


@dataclass
class RankRing:
    """A rank's ring of one array, mapped here: its views, where its blocks go, the posts seen."""

    array: str
    ring: ShmRing
    views: list[np.ndarray[Any, Any]]
    index: tuple[int, ...]
    dtype: np.dtype[Any]
    chunks: tuple[tuple[int, ...], ...]
    nblocks: int
    #: the rank's ``posts`` and each slot's ``posted`` count, as last seen here
    seen_posts: int = 0
    seen: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.seen = [0] * self.ring.slots

    def collect(self, conn: RankConn, ring_id: int, into: list[PostedSlot]) -> None:
        """Add the slots posted since the last look to ``into``."""
        ring = self.ring
        posts = ring.control[POSTS]
        if posts == self.seen_posts:
            return
        self.seen_posts = posts
        posted, seen = ring.posted, self.seen
        for slot in range(ring.slots):
            count = posted[slot]
            if count != seen[slot]:
                seen[slot] = count
                tm = ring.times[slot]  # NaN: none
                step, tags = ring.steps[slot], ring.tags[slot]
                into.append(PostedSlot(conn, self, slot, ring_id, step, None if tm != tm else tm, tags))


@dataclass
class PostedSlot:
    """A block announced by a rank, not yet copied out of its slot."""

    conn: RankConn
    entry: RankRing
    slot: int
    ring_id: int
    step: int
    time: float | None
    tags: int = 0


@dataclass
class RankConn:
    """One rank's connection to this node actor, and its rings."""

    sock: socket.socket
    reader: MessageReader = field(default_factory=lambda: MessageReader(RankMessage | Wake))
    rank: int | None = None
    rings: dict[int, RankRing] = field(default_factory=dict[int, RankRing])
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False  # the rank said 'close'
    deaf: bool = False  # a send failed: the rank has left, the messages it sent before may still be read

    def send(self, message: Welcome | Done) -> None:
        self.send_bytes(encode(message))

    def send_bytes(self, frame: bytes) -> None:
        with self.lock:
            self.sock.sendall(frame)

    def map_ring(self, message: RingOpened, *, asleep: bool) -> None:
        """Map the ring the rank announced (``asleep``: whether its posts must wake the node actor)."""
        try:
            ring = ShmRing(message.path, message.slots, message.slot_size, create=False)
        except FileNotFoundError:  # the rank closed it before we read this: it never posted to it
            log.info("rank %s closed its ring of %r before the node mapped it", self.rank, message.array)
            return
        ring.control[ASLEEP] = int(asleep)
        # Both sides have it mapped: remove the name now, so that nothing is left in /dev/shm
        # even if the rank or this actor dies without cleaning up.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(message.path)
        dtype = np.dtype(message.dtype)
        views = ring.views(message.shape, dtype)
        self.rings[message.ring_id] = RankRing(
            message.array, ring, views, message.index, dtype, message.chunks, message.nblocks
        )

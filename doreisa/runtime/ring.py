"""The shared memory ring of one rank and array: slots for blocks, and a header both sides poll.

A rank copies a wanted block into a free slot and posts it in the header (step, simulation
time, then a counter); the node actor copies the slot into Ray's object store, off the
simulation's critical path, and counts the slot free again in the header. While ranks post
often, the node actor polls the headers and the rank makes no system call; once idle, it
sleeps on the socket and a rank that posts sends it a ``wake`` record (see
:mod:`doreisa.runtime.protocol`; why a system call matters here: docs/performance.md).

Shared by both sides: the rank creates the ring, the node actor maps it. numpy only.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import platform
import threading
from typing import Any

import numpy as np

NAN = float("nan")
#: Stores become visible to other cores in program order (x86-64). Only then may the node actor
#: read a ring's header without a system call between the rank's post and its read; elsewhere
#: a rank sends ``wake`` for every post, and the node reads only the rings of ranks that did.
TOTAL_STORE_ORDER = platform.machine().lower() in {"x86_64", "amd64", "i386", "i686"}
_FENCE = threading.Lock()


def fence() -> None:
    """A full memory barrier: an uncontended lock's acquire and release are atomic read-modify-writes.

    Between a store and a load of another word that the other side stores to (a rank posts then
    reads ``asleep``; the node actor sets ``asleep`` then reads the posts), so that both never
    miss each other's store.
    """
    _FENCE.acquire()
    _FENCE.release()


PAGE = mmap.PAGESIZE
#: Words of a ring's ``control`` header.
ASLEEP, POSTS = 0, 1
#: Slots are aligned so that every block starts on a cache line (numpy copies faster).
ALIGN = 64


def slot_bytes(nbytes: int) -> int:
    """Size of one ring slot holding ``nbytes``."""
    return max(ALIGN, -(-nbytes // ALIGN) * ALIGN)


class ShmRing:
    """``slots`` equal slots in one shared memory file, after a header of 8-byte words.

    The header: ``asleep`` (the node actor's, 1 while it waits on the socket: a rank that posts
    must wake it), ``posts`` (the rank's count of posts, for the node actor to see at one read
    that nothing changed), then per slot ``freed`` (how many times the node actor has taken the
    slot: it alone writes it, after its copy of the slot has returned), ``posted`` (how many
    times the rank has handed the slot over: it alone writes it, after the block and its
    ``steps`` and ``times`` entries). A slot is free when its two counters are equal, so the rank
    sees free slots with a memory read instead of a socket read (which costs far more right after
    a simulation step has evicted the caches: docs/performance.md). Aligned words are read and
    written whole. A new ring starts ``asleep``: until the node actor has mapped it, ranks wake it.
    """

    def __init__(self, path: str, slots: int, slot_size: int, *, create: bool) -> None:
        self.path = path
        self.slots = slots
        self.slot_size = slot_size
        self.header_bytes = -(-(8 * (2 + 5 * slots)) // PAGE) * PAGE  # slots start on a page
        size = self.header_bytes + slots * slot_size
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self._mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        if create:
            # Touch every page now so that the first copies do not pay page faults.
            np.frombuffer(self._mm, dtype=np.uint8)[::PAGE] = 0
        words = memoryview(self._mm)
        field = lambda i, fmt: words[8 * (2 + i * slots) : 8 * (2 + (i + 1) * slots)].cast(fmt)  # noqa: E731
        self.control: memoryview = words[:16].cast("Q")
        self.freed: memoryview = field(0, "Q")
        self.posted: memoryview = field(1, "Q")
        self.steps: memoryview = field(2, "q")
        self.times: memoryview[float] = field(3, "d")
        #: the triggers active on every rank at the block's step, one bit per trigger of the contract
        self.tags: memoryview = field(4, "Q")
        self._words = (words, self.control, self.freed, self.posted, self.steps, self.times, self.tags)
        if create:
            self.control[ASLEEP] = 1

    def view(self, slot: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
        """A numpy view of ``slot`` with the given shape and dtype."""
        count = int(np.prod(shape, dtype=np.int64))
        # frombuffer exports the mapping: close() then cannot unmap it under a live view
        offset = self.header_bytes + slot * self.slot_size
        return np.frombuffer(self._mm, dtype=dtype, count=count, offset=offset).reshape(shape)

    def views(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> list[np.ndarray[Any, Any]]:
        """A view of every slot, made once: building a view costs more than copying a small block."""
        return [self.view(slot, shape, dtype) for slot in range(self.slots)]

    def close(self, *, unlink: bool = False) -> None:
        """Unmap; with ``unlink``, also remove the file (the creator does this)."""
        for words in reversed(self._words):
            words.release()
        with contextlib.suppress(BufferError):  # a view is still alive; the mapping goes with it
            self._mm.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

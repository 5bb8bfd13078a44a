"""Rank <-> node actor transport: length-prefixed messages over a Unix socket, and shared memory rings.

A rank copies a wanted block into a slot of its ring (node-local shared memory, pages touched
in advance) and sends a few bytes naming the slot; the node actor copies the slot into Ray's
object store, off the simulation's critical path, and sends the slot back. No pickle crosses
the socket. Control messages are JSON; the two messages of the data path, ``put`` (rank to
node) and ``free`` (node to rank), are fixed-size binary records, flagged in the length
header: encoding JSON costs the rank ~5 µs warm and ~100 µs right after a simulation step
has evicted the caches, a ``struct`` record about 1 µs.
"""

from __future__ import annotations

import collections
import contextlib
import json
import mmap
import os
import socket
import struct
from typing import Any

import numpy as np

_HEADER = struct.Struct("!I")
MAX_MESSAGE = 16 * 1024 * 1024
#: Set in the length header of a binary record.
BINARY = 0x8000_0000
_PUT, _FREE = 1, 2
#: put: kind, ring id, slot, step, simulation time (NaN: none)
_PUT_RECORD = struct.Struct("!BHIqd")
#: free: kind, ring id, slot
_FREE_RECORD = struct.Struct("!BHI")
_PUT_FRAME = struct.Struct("!I" + _PUT_RECORD.format[1:])
_FREE_FRAME = struct.Struct("!I" + _FREE_RECORD.format[1:])
_NAN = float("nan")
PAGE = mmap.PAGESIZE
#: Slots are aligned so that every block starts on a cache line (numpy copies faster).
ALIGN = 64


def encode(message: dict[str, Any]) -> bytes:
    """One framed message."""
    data = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(data)) + data


def encode_put(ring: int, slot: int, step: int, time: float | None) -> bytes:
    """The binary ``put`` record: slot ``slot`` of ring ``ring`` holds ``step`` (at ``time``)."""
    return _PUT_FRAME.pack(BINARY | _PUT_RECORD.size, _PUT, ring, slot, step, _NAN if time is None else time)


def encode_free(ring: int, slot: int) -> bytes:
    """The binary ``free`` record: slot ``slot`` of ring ``ring`` may be written again."""
    return _FREE_FRAME.pack(BINARY | _FREE_RECORD.size, _FREE, ring, slot)


def _decode_record(payload: bytes) -> dict[str, Any]:
    kind = payload[0] if payload else None
    if kind == _PUT and len(payload) == _PUT_RECORD.size:
        _, ring, slot, step, time = _PUT_RECORD.unpack(payload)
        return {"t": "put", "ring": ring, "slot": slot, "s": step, "tm": None if time != time else time}
    if kind == _FREE and len(payload) == _FREE_RECORD.size:
        _, ring, slot = _FREE_RECORD.unpack(payload)
        return {"t": "free", "ring": ring, "slot": slot}
    raise ValueError(f"unknown binary record: kind {kind}, {len(payload)} bytes")


class MessageReader:
    """Splits a byte stream into messages; works with blocking and non-blocking sockets."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        #: Complete messages not handed out yet by :func:`recv_one`.
        self.pending: collections.deque[dict[str, Any]] = collections.deque()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add received bytes; return every message they complete (and those still pending)."""
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            (header,) = _HEADER.unpack_from(self._buffer)
            length = header & ~BINARY
            if length > MAX_MESSAGE:
                raise ValueError(f"message of {length} bytes exceeds the {MAX_MESSAGE}-byte limit")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            self.pending.append(_decode_record(payload) if header & BINARY else json.loads(payload))
        out = list(self.pending)
        self.pending.clear()
        return out


def recv_one(sock: socket.socket, reader: MessageReader, timeout: float) -> dict[str, Any]:
    """Block until one message arrives (``TimeoutError`` after ``timeout`` s, ``EOFError`` if closed).

    Messages that arrived in the same read stay in ``reader.pending`` for the next call.
    """
    if reader.pending:
        return reader.pending.popleft()
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                raise EOFError("the node actor closed the connection")
            messages = reader.feed(data)
            if messages:
                reader.pending.extend(messages[1:])
                return messages[0]
    finally:
        sock.settimeout(None)


def slot_bytes(nbytes: int) -> int:
    """Size of one ring slot holding ``nbytes``."""
    return max(ALIGN, -(-nbytes // ALIGN) * ALIGN)


class ShmRing:
    """``slots`` equal slots in one shared memory file, after a header of one counter per slot.

    ``freed[slot]`` counts how many times the node actor has taken ``slot`` (it alone writes
    it, after its copy of the slot has returned): the rank, which counts its own puts per slot,
    sees which slots are free again with a memory read instead of a socket read (~1-2 µs warm,
    ~80 µs right after a simulation step has evicted the caches on these machines). The
    aligned 8-byte counters are read and written whole.
    """

    def __init__(self, path: str, slots: int, slot_size: int, *, create: bool) -> None:
        self.path = path
        self.slots = slots
        self.slot_size = slot_size
        self.header_bytes = -(-(8 * slots) // PAGE) * PAGE  # slots start on a page
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
        self.freed: memoryview = memoryview(self._mm)[: 8 * slots].cast("Q")

    def view(self, slot: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
        """A numpy view of ``slot`` with the given shape and dtype."""
        count = int(np.prod(shape, dtype=np.int64))
        # frombuffer exports the mapping: close() then cannot unmap it under a live view
        offset = self.header_bytes + slot * self.slot_size
        return np.frombuffer(self._mm, dtype=dtype, count=count, offset=offset).reshape(shape)

    def views(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> list[np.ndarray[Any, Any]]:
        """A view of every slot, made once: a view costs ~5-60 µs to build, which the data path need not pay."""
        return [self.view(slot, shape, dtype) for slot in range(self.slots)]

    def close(self, *, unlink: bool = False) -> None:
        """Unmap; with ``unlink``, also remove the file (the creator does this)."""
        self.freed.release()
        with contextlib.suppress(BufferError):  # a view is still alive; the mapping goes with it
            self._mm.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

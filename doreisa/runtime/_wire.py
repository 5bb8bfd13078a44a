"""Rank <-> node actor transport: length-prefixed JSON over a Unix socket, and shared memory rings.

A rank copies a wanted block into a slot of its ring (node-local shared memory, pages touched
in advance) and sends a few bytes naming the slot; the node actor copies the slot into Ray's
object store, off the simulation's critical path, and sends the slot back. No pickle crosses
the socket: messages are JSON.
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
PAGE = mmap.PAGESIZE
#: Slots are aligned so that every block starts on a cache line (numpy copies faster).
ALIGN = 64


def encode(message: dict[str, Any]) -> bytes:
    """One framed message."""
    data = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(data)) + data


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
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > MAX_MESSAGE:
                raise ValueError(f"message of {length} bytes exceeds the {MAX_MESSAGE}-byte limit")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            self.pending.append(json.loads(payload))
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
    """``slots`` equal slots in one shared memory file."""

    def __init__(self, path: str, slots: int, slot_size: int, *, create: bool) -> None:
        self.path = path
        self.slots = slots
        self.slot_size = slot_size
        size = slots * slot_size
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

    def view(self, slot: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
        """A numpy view of ``slot`` with the given shape and dtype."""
        count = int(np.prod(shape, dtype=np.int64))
        # frombuffer exports the mapping: close() then cannot unmap it under a live view
        return np.frombuffer(self._mm, dtype=dtype, count=count, offset=slot * self.slot_size).reshape(shape)

    def close(self, *, unlink: bool = False) -> None:
        """Unmap; with ``unlink``, also remove the file (the creator does this)."""
        with contextlib.suppress(BufferError):  # a view is still alive; the mapping goes with it
            self._mm.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

"""How messages travel on the rank <-> node actor socket: framing, the binary hot-path records, reading.

Each message is a 4-byte length and a msgpack-encoded tagged record of
:mod:`doreisa.runtime.protocol` (field ``t`` names its type): no pickle crosses the socket.
``wake`` and ``free``, on the hot path, are fixed-size binary records (the length's top bit
set). A message of a type the reader does not take is a :class:`Malformed` record naming it,
never a default.
"""

from __future__ import annotations

import collections
import socket
import struct
from typing import Any

import msgspec

from doreisa.errors import ProtocolError
from doreisa.runtime.protocol import NodeMessage, RankMessage, Record

_HEADER = struct.Struct("!I")
MAX_MESSAGE = 16 * 1024 * 1024
BINARY = 0x8000_0000  # set in the length header of a binary record
_FREE, _WAKE = 2, 3
#: free: kind, ring id, slot
_FREE_RECORD = struct.Struct("!BHI")
_FREE_FRAME = struct.Struct("!I" + _FREE_RECORD.format[1:])
#: wake: kind only (the node actor reads the ring headers to know what was posted)
WAKE = struct.pack("!IB", BINARY | 1, _WAKE)
_ENCODER = msgspec.msgpack.Encoder()


class Wake(Record, frozen=True):
    """A rank posted to a sleeping node actor (decoded from the binary record)."""


class Free(Record, frozen=True):
    """Slot ``slot`` of ring ``ring`` may be written again (decoded from the binary record)."""

    ring: int
    slot: int


class Malformed(Record, frozen=True):
    """A framed message that could not be decoded (never sent): the reader decides what it costs.

    The frames around it are intact, so the messages after it can still be read.
    """

    error: str


def encode(message: RankMessage | NodeMessage) -> bytes:
    """One framed message."""
    data = _ENCODER.encode(message)
    return _HEADER.pack(len(data)) + data


def free_record(ring: int, slot: int) -> bytes:
    """The binary ``free`` record: slot ``slot`` of ring ``ring`` may be written again."""
    return _FREE_FRAME.pack(BINARY | _FREE_RECORD.size, _FREE, ring, slot)


def _decode_binary(payload: bytes) -> Wake | Free:
    kind = payload[0] if payload else None
    if kind == _WAKE and len(payload) == 1:
        return Wake()
    if kind == _FREE and len(payload) == _FREE_RECORD.size:
        _, ring, slot = _FREE_RECORD.unpack(payload)
        return Free(ring, slot)
    raise ProtocolError(f"unknown binary record: kind {kind}, {len(payload)} bytes")


class MessageReader:
    """Splits a byte stream into messages of ``kinds``; works with blocking and non-blocking sockets.

    The rank reads :data:`NodeMessage` (and ``free``), the node actor :data:`RankMessage` (and ``wake``).
    """

    def __init__(self, kinds: Any) -> None:
        self._decoder = msgspec.msgpack.Decoder(kinds)
        self._kinds = kinds
        self._buffer = bytearray()
        #: Complete messages not handed out yet by :func:`recv_one`.
        self.pending: collections.deque[Any] = collections.deque()

    def feed(self, data: bytes) -> list[Any]:
        """Add received bytes; return every message they complete (and those still pending).

        A message of an unknown type or malformed comes out as :class:`Malformed`.

        Raises
        ------
        ProtocolError
            For a frame too large or a binary record of an unknown kind: the stream cannot be read further.
        """
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            (header,) = _HEADER.unpack_from(self._buffer)
            length = header & ~BINARY
            if length > MAX_MESSAGE:
                raise ProtocolError(f"message of {length} bytes exceeds the {MAX_MESSAGE}-byte limit")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            self.pending.append(_decode_binary(payload) if header & BINARY else self._decode(payload))
        out = list(self.pending)
        self.pending.clear()
        return out

    def _decode(self, payload: bytes) -> Any:
        try:
            return self._decoder.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return Malformed(
                f"unreadable message ({exc}); expected one of {', '.join(_names_of(self._kinds))}. Do the rank and "
                "the runtime run the same doreisa version?"
            )


def _names_of(kinds: Any) -> list[str]:
    return [k.__name__ for k in getattr(kinds, "__args__", (kinds,))]


def recv_one(sock: socket.socket, reader: MessageReader, timeout: float) -> Any:
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

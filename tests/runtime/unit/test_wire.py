"""Length-prefixed framing (JSON control messages, binary data-path records) and the shared memory ring."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from doreisa.runtime.protocol import (
    ALIGN,
    ASLEEP,
    BINARY,
    MAX_MESSAGE,
    NAN,
    POSTS,
    WAKE,
    MessageReader,
    ShmRing,
    encode,
    encode_free,
    recv_one,
    slot_bytes,
)

MESSAGES = [
    {"t": "hello", "rank": 3, "size": 4},
    {"t": "put", "a": "field", "s": 12, "tm": 0.5, "slot": 1, "i": [0, 2]},
    {"t": "done", "items": [["field", 12], ["other", 12]]},
    {"t": "welcome", "contract": "arrays:\n  é: {}\n" * 50},
]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def test_encode_is_length_prefixed_json() -> None:
    payload = b'{"t":"free","slot":2}'
    assert encode({"t": "free", "slot": 2}) == struct.pack("!I", len(payload)) + payload


def test_concatenated_frames_are_split() -> None:
    stream = b"".join(encode(m) for m in MESSAGES)
    assert list(MessageReader().feed(stream)) == MESSAGES


def test_frames_fed_byte_by_byte() -> None:
    stream = b"".join(encode(m) for m in MESSAGES)
    reader = MessageReader()
    got = [m for i in range(len(stream)) for m in reader.feed(stream[i : i + 1])]
    assert got == MESSAGES


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 17, 40])
def test_fragmented_frames(cut: int) -> None:
    stream = b"".join(encode(m) for m in MESSAGES)
    reader = MessageReader()
    got = [m for start in range(0, len(stream), cut) for m in reader.feed(stream[start : start + cut])]
    assert got == MESSAGES


def test_incomplete_frame_waits_for_more() -> None:
    frame = encode(MESSAGES[1])
    reader = MessageReader()
    assert list(reader.feed(frame[:-1])) == []
    assert list(reader.feed(frame[-1:])) == [MESSAGES[1]]


def test_binary_records_round_trip() -> None:
    stream = WAKE + encode_free(3, 17) + encode_free(0, 2**32 - 1) + WAKE
    assert MessageReader().feed(stream) == [
        {"t": "wake"},
        {"t": "free", "ring": 3, "slot": 17},
        {"t": "free", "ring": 0, "slot": 2**32 - 1},
        {"t": "wake"},
    ]


def test_binary_records_are_small_and_flagged() -> None:
    for frame, size in [(WAKE, 5), (encode_free(1, 2), 11)]:
        (header,) = struct.unpack_from("!I", frame)
        assert header & BINARY
        assert len(frame) == 4 + (header & ~BINARY) == size


@pytest.mark.parametrize("cut", [1, 2, 5, 11, 13])
def test_binary_and_json_frames_interleave_in_fragments(cut: int) -> None:
    frames = [encode(MESSAGES[0]), WAKE, encode(MESSAGES[2]), encode_free(2, 9)]
    stream = b"".join(frames)
    reader = MessageReader()
    got = [m for start in range(0, len(stream), cut) for m in reader.feed(stream[start : start + cut])]
    assert got == [
        MESSAGES[0],
        {"t": "wake"},
        MESSAGES[2],
        {"t": "free", "ring": 2, "slot": 9},
    ]


@pytest.mark.parametrize("payload", [b"", b"\x07abc", b"\x01" + bytes(21), b"\x02" + bytes(9), b"\x03\x00"])
def test_unknown_binary_record_is_refused(payload: bytes) -> None:
    frame = struct.pack("!I", BINARY | len(payload)) + payload
    with pytest.raises(ValueError, match="unknown binary record"):
        MessageReader().feed(frame)


def test_oversize_header_is_refused() -> None:
    with pytest.raises(ValueError, match=rf"message of {MAX_MESSAGE + 1} bytes exceeds the {MAX_MESSAGE}-byte limit"):
        list(MessageReader().feed(struct.pack("!I", MAX_MESSAGE + 1)))


def test_recv_one_returns_a_message(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    frame = encode(MESSAGES[2])
    a.sendall(frame[:5])
    a.sendall(frame[5:])
    assert recv_one(b, MessageReader(), timeout=2) == MESSAGES[2]
    assert b.gettimeout() is None  # blocking again


def test_recv_one_times_out(pair: tuple[socket.socket, socket.socket]) -> None:
    with pytest.raises(TimeoutError):
        recv_one(pair[1], MessageReader(), timeout=0.05)


def test_recv_one_on_closed_peer(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.close()
    with pytest.raises(EOFError, match="closed the connection"):
        recv_one(b, MessageReader(), timeout=1)


def test_recv_one_returns_messages_already_buffered(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    reader = MessageReader()
    a.sendall(encode(MESSAGES[1]) + encode(MESSAGES[2]))
    assert recv_one(b, reader, timeout=1) == MESSAGES[1]
    assert recv_one(b, reader, timeout=0.2) == MESSAGES[2]


# -- shared memory ring -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nbytes", "size"), [(0, ALIGN), (1, ALIGN), (ALIGN, ALIGN), (ALIGN + 1, 2 * ALIGN), (1000, 1024)]
)
def test_slot_bytes_are_aligned(nbytes: int, size: int) -> None:
    assert slot_bytes(nbytes) == size


def test_ring_is_shared_between_mappings(tmp_path: Path) -> None:
    path = str(tmp_path / "ring")
    size = slot_bytes(6 * 8)
    writer = ShmRing(path, 3, size, create=True)
    reader = ShmRing(path, 3, size, create=False)
    assert Path(path).stat().st_size == writer.header_bytes + 3 * size
    for slot in range(3):
        writer.view(slot, (2, 3), np.dtype("float64"))[...] = np.arange(6.0).reshape(2, 3) + 10 * slot
    for slot in range(3):
        np.testing.assert_array_equal(
            reader.view(slot, (2, 3), np.dtype("float64")), np.arange(6.0).reshape(2, 3) + 10 * slot
        )
    reader.view(1, (6,), np.dtype("float64"))[0] = -1.0  # both ways
    assert writer.view(1, (2, 3), np.dtype("float64"))[0, 0] == -1.0
    reader.close()
    writer.close(unlink=True)
    assert not Path(path).exists()


def test_views_are_one_per_slot_and_shared(tmp_path: Path) -> None:
    path = str(tmp_path / "ring")
    writer = ShmRing(path, 3, 64, create=True)
    reader = ShmRing(path, 3, 64, create=False)
    views = writer.views((2, 2), np.dtype("int64"))
    assert [v.shape for v in views] == [(2, 2)] * 3
    for slot, view in enumerate(views):
        view[...] = slot
    assert [int(v.sum()) for v in reader.views((4,), np.dtype("int64"))] == [0, 4, 8]
    del views
    reader.close()
    writer.close(unlink=True)


def test_view_offsets_per_slot(tmp_path: Path) -> None:
    path = str(tmp_path / "ring")
    ring = ShmRing(path, 4, 128, create=True)
    for slot in range(4):
        ring.view(slot, (3,), np.dtype("int32"))[...] = [slot + 1, slot + 2, slot + 3]
    ring.close()
    raw = np.fromfile(path, dtype=np.uint8)
    assert ring.header_bytes % 4096 == 0 and len(raw) == ring.header_bytes + 4 * 128
    for slot in range(4):
        at = ring.header_bytes + slot * 128
        np.testing.assert_array_equal(raw[at : at + 12].view(np.int32), [slot + 1, slot + 2, slot + 3])
        assert not raw[at + 12 : at + 128].any()  # the rest of the slot is untouched


def test_header_words_are_shared(tmp_path: Path) -> None:
    path = str(tmp_path / "ring")
    rank = ShmRing(path, 600, 64, create=True)  # 2 + 4 x 600 words: the header spans five pages
    node = ShmRing(path, 600, 64, create=False)
    assert rank.header_bytes == 5 * 4096
    assert (rank.control[ASLEEP], rank.control[POSTS]) == (1, 0)  # asleep until the node says otherwise
    assert list(rank.freed[:3]) == list(rank.posted[:3]) == [0, 0, 0]
    node.control[ASLEEP] = 0
    node.freed[599] += 1
    node.freed[1] = 2**40
    rank.posted[599] = 3
    rank.steps[599], rank.times[599], rank.times[0] = -(2**40), 0.25, NAN
    rank.control[POSTS] += 1
    assert (rank.control[ASLEEP], rank.freed[599], rank.freed[1]) == (0, 1, 2**40)
    assert (node.control[POSTS], node.posted[599], node.steps[599], node.times[599]) == (1, 3, -(2**40), 0.25)
    assert node.times[0] != node.times[0] and node.posted[598] == node.freed[598] == 0  # the words do not overlap
    rank.views((8,), np.dtype("float64"))[599][...] = 7.0  # the last slot ends at the end of the file
    assert node.view(599, (8,), np.dtype("float64"))[-1] == 7.0
    node.close()
    rank.close(unlink=True)


def test_ring_create_refuses_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "ring"
    path.write_bytes(b"x")
    with pytest.raises(FileExistsError):
        ShmRing(str(path), 1, 64, create=True)


def test_ring_close_unlinks(tmp_path: Path) -> None:
    path = str(tmp_path / "ring")
    ring = ShmRing(path, 2, 64, create=True)
    ring.close(unlink=True)
    assert not Path(path).exists()
    ring.close(unlink=True)  # twice is harmless


_LIVE_VIEW = """
import sys
import numpy as np
from doreisa.runtime.protocol import ShmRing
ring = ShmRing(sys.argv[1], 2, 64, create=True)
view = ring.view(0, (8,), np.dtype("float64"))
ring.close(unlink=True)
view[0] = 1.0
print("ok", view[0])
"""


def test_ring_close_keeps_mapping_for_live_view(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LIVE_VIEW, str(tmp_path / "ring")], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok 1.0")

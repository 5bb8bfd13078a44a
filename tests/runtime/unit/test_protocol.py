"""The messages between processes: typed records, their framing on the socket, the binary records."""

from __future__ import annotations

import pickle
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from doreisa.contract import load_contract
from doreisa.errors import ProtocolError
from doreisa.runtime.plan import rank_plan
from doreisa.runtime.protocol import (
    Applied,
    BlockRecord,
    CadenceChange,
    Close,
    CompleteStep,
    Decision,
    Done,
    Hello,
    MonitorBatch,
    MonitorValues,
    NodeMessage,
    RankMessage,
    RankStats,
    RingOpened,
    StepLost,
    Taken,
    TriggerFailed,
    Welcome,
)
from doreisa.runtime.wire import (
    BINARY,
    MAX_MESSAGE,
    WAKE,
    Free,
    Malformed,
    MessageReader,
    Wake,
    encode,
    free_record,
    recv_one,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "contracts"
DECISION = Decision(3, 120, "trigger:hot", apply_at=122, triggers={"hot": True}, cadence={"t": {"every": 5}})
FROM_RANK: list[Any] = [
    Hello(3, 4, 1234, "node-a"),
    RingOpened("field", 0, (0, 2), "/dev/shm/x", 4, 256, (6, 4), "<f8", ((6, 6), (4, 4, 4)), 6),
    Applied(0, 122, DECISION, (CadenceChange("t", {"every": 10}, {"every": 5}),)),
    MonitorBatch(0, (MonitorValues(12, 0.5, {"max(t)": 351.25}), MonitorValues(13, None, {"max(t)": 1.0}))),
    TriggerFailed(0, 7, "division by zero"),
    Close(3, RankStats(calls=10, published=3, skipped_steps=(("field", 4),))),
]
FROM_NODE: list[Any] = [
    Welcome(
        "n" * 56,
        {"arrays": {"é": {"dtype": "float64", "shape": [4]}}, "x": "y" * 5000},
        rank_plan(load_contract(EXAMPLES / "zoom.yaml")),  # views, selects, a trigger and a monitor
    ),
    Done((("field", 12), ("other", 12)), (DECISION,)),
]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def _rank_reader() -> MessageReader:
    return MessageReader(RankMessage | Wake)


def _frame(record: Any) -> bytes:
    data = msgspec.msgpack.encode(record)
    return struct.pack("!I", len(data)) + data


def test_encode_is_length_prefixed_msgpack_tagged_with_the_type() -> None:
    frame = encode(Hello(1, 2, 3, "h"))
    (length,) = struct.unpack_from("!I", frame)
    assert length == len(frame) - 4
    assert msgspec.msgpack.decode(frame[4:]) == {"t": "Hello", "rank": 1, "size": 2, "pid": 3, "host": "h"}


@pytest.mark.parametrize(("messages", "kinds"), [(FROM_RANK, RankMessage), (FROM_NODE, NodeMessage)])
def test_every_message_round_trips(messages: list[Any], kinds: Any) -> None:
    assert MessageReader(kinds).feed(b"".join(encode(m) for m in messages)) == messages


def test_frames_fed_byte_by_byte() -> None:
    stream = b"".join(encode(m) for m in FROM_RANK)
    reader = _rank_reader()
    got = [m for i in range(len(stream)) for m in reader.feed(stream[i : i + 1])]
    assert got == FROM_RANK


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 17, 40])
def test_fragmented_frames(cut: int) -> None:
    stream = b"".join(encode(m) for m in FROM_RANK)
    reader = _rank_reader()
    got = [m for start in range(0, len(stream), cut) for m in reader.feed(stream[start : start + cut])]
    assert got == FROM_RANK


def test_incomplete_frame_waits_for_more() -> None:
    frame = encode(FROM_RANK[1])
    reader = _rank_reader()
    assert list(reader.feed(frame[:-1])) == []
    assert list(reader.feed(frame[-1:])) == [FROM_RANK[1]]


def test_records_are_frozen_and_pickle() -> None:
    # What the node actor reports to the head travels as Ray call arguments (pickled).
    record = BlockRecord("t", 4, 0.5, (1, 0), ((2, 2), (4,)), 2, "<f8", 1, "node", "where", "ref-of-object", 1)
    complete = CompleteStep("t", 4, None, ((2, 2),), "<f8", {(0,): "a", (1,): "b"}, {(0,): "n"}, {(1,): 0})
    lost = StepLost("t", 5, 1, 2, (0,))
    taken = Taken((complete,), (lost, FROM_RANK[2]), 3)
    for value in (record, complete, taken, DECISION):
        assert pickle.loads(pickle.dumps(value)) == value
    with pytest.raises(AttributeError):
        record.step = 5  # type: ignore[misc]


def test_decision_defaults_are_empty_and_not_shared() -> None:
    a, b = Decision(1, 2, "s"), Decision(1, 2, "s")
    assert (a.apply_at, a.triggers, a.cadence, a.steering, a.values, a.local) == (None, {}, {}, {}, {}, False)
    assert a.triggers is not b.triggers


def test_a_message_of_an_unknown_type_is_named() -> None:
    (got,) = _rank_reader().feed(_frame({"t": "Gossip", "text": "hi"}))
    assert isinstance(got, Malformed)
    assert "Invalid value 'Gossip' - at `$.t`" in got.error
    expected = "Hello, RingOpened, Close, Applied, MonitorBatch, TriggerFailed, Publishing, Wake"
    assert f"expected one of {expected}" in got.error


def test_a_message_of_the_other_direction_is_malformed() -> None:
    # A node actor never takes Done, a rank never takes Hello: each side decodes only its own messages.
    (got,) = _rank_reader().feed(encode(FROM_NODE[1]))
    assert isinstance(got, Malformed) and "Invalid value 'Done'" in got.error
    (got,) = MessageReader(NodeMessage).feed(encode(FROM_RANK[0]))
    assert isinstance(got, Malformed) and "Invalid value 'Hello'" in got.error


def test_messages_after_a_malformed_one_are_read() -> None:
    stream = _frame({"t": "RingOpened", "array": "x"}) + encode(FROM_RANK[0]) + _frame([1, 2]) + WAKE
    got = _rank_reader().feed(stream)
    assert [type(m) for m in got] == [Malformed, Hello, Malformed, Wake]
    assert "Object missing required field `ring_id`" in got[0].error
    assert "Expected `object`, got `array`" in got[2].error


def test_binary_records_round_trip() -> None:
    stream = WAKE + free_record(3, 17) + free_record(0, 2**32 - 1) + WAKE
    assert MessageReader(NodeMessage | Wake | Free).feed(stream) == [Wake(), Free(3, 17), Free(0, 2**32 - 1), Wake()]


def test_binary_records_are_small_and_flagged() -> None:
    for frame, size in [(WAKE, 5), (free_record(1, 2), 11)]:
        (header,) = struct.unpack_from("!I", frame)
        assert header & BINARY
        assert len(frame) == 4 + (header & ~BINARY) == size


@pytest.mark.parametrize("cut", [1, 2, 5, 11, 13])
def test_binary_and_encoded_frames_interleave_in_fragments(cut: int) -> None:
    frames = [encode(FROM_NODE[0]), free_record(1, 1), encode(FROM_NODE[1]), free_record(2, 9)]
    stream = b"".join(frames)
    reader = MessageReader(NodeMessage | Free)
    got = [m for start in range(0, len(stream), cut) for m in reader.feed(stream[start : start + cut])]
    assert got == [FROM_NODE[0], Free(1, 1), FROM_NODE[1], Free(2, 9)]


@pytest.mark.parametrize("payload", [b"", b"\x07abc", b"\x01" + bytes(21), b"\x02" + bytes(9), b"\x03\x00"])
def test_unknown_binary_record_is_refused(payload: bytes) -> None:
    frame = struct.pack("!I", BINARY | len(payload)) + payload
    with pytest.raises(ProtocolError, match="unknown binary record"):
        _rank_reader().feed(frame)


def test_oversize_header_is_refused() -> None:
    with pytest.raises(
        ProtocolError, match=rf"message of {MAX_MESSAGE + 1} bytes exceeds the {MAX_MESSAGE}-byte limit"
    ):
        list(_rank_reader().feed(struct.pack("!I", MAX_MESSAGE + 1)))


def test_recv_one_returns_a_message(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    frame = encode(FROM_NODE[1])
    a.sendall(frame[:5])
    a.sendall(frame[5:])
    assert recv_one(b, MessageReader(NodeMessage), timeout=2) == FROM_NODE[1]
    assert b.gettimeout() is None  # blocking again


def test_recv_one_times_out(pair: tuple[socket.socket, socket.socket]) -> None:
    with pytest.raises(TimeoutError):
        recv_one(pair[1], MessageReader(NodeMessage), timeout=0.05)


def test_recv_one_on_closed_peer(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.close()
    with pytest.raises(EOFError, match="closed the connection"):
        recv_one(b, MessageReader(NodeMessage), timeout=1)


def test_recv_one_returns_messages_already_buffered(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    reader = MessageReader(NodeMessage)
    a.sendall(encode(FROM_NODE[0]) + encode(FROM_NODE[1]))
    assert recv_one(b, reader, timeout=1) == FROM_NODE[0]
    assert recv_one(b, reader, timeout=0.2) == FROM_NODE[1]

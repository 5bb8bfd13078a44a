"""The rank Bridge and the NodeServer over a real Unix socket and shared memory, without Ray."""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from doreisa.contract import parse_contract
from doreisa.errors import BlockMismatchError, BridgeError, RuntimeUnavailableError
from doreisa.runtime import _names
from doreisa.runtime.cadence import ArrayCadence
from doreisa.runtime.protocol import (
    Close,
    Done,
    Hello,
    MonitorBatch,
    RankClosed,
    RankError,
    RankJoined,
    RankLost,
    RankStats,
    RingOpened,
    Welcome,
)
from doreisa.runtime.rank import steering as _steer
from doreisa.runtime.rank.bridge import Bridge
from doreisa.runtime.rank.comm import SingleProcessComm
from doreisa.runtime.rank.shm import MAX_RING_SLOTS, MIN_RING_SLOTS, RingStaging, ring_slots
from doreisa.runtime.ring import ASLEEP, NAN, POSTS, ShmRing, slot_bytes
from doreisa.runtime.wire import WAKE, Free, MessageReader, encode, recv_one

Rig = Any  # conftest.Rig
MakeRig = Callable[[str], tuple[Rig, Bridge]]

SHAPE = (6, 4)


def _contract(cadence: str = "{every: 1}", extra: str = "", array: str = "") -> str:
    return f"""
arrays:
  field:
    dtype: float64
    shape: [6, 4]
    block: [6, 4]
{array}
cadence: {cadence}
{extra}
"""


def _data(step: int, dtype: str = "float64") -> np.ndarray[Any, Any]:
    return (np.arange(24).reshape(SHAPE) + 100 * step).astype(dtype)


def _ring_path(run_dir: str, name: str = "field") -> str:
    base = _names.SHM_DIR if os.path.isdir(_names.SHM_DIR) else run_dir
    return os.path.join(base, f"{_names.SHM_PREFIX}{Path(run_dir).name}-0-{name}")


# -- connection -----------------------------------------------------------------------------


def test_hello_gets_the_contract(rig_bridge: MakeRig) -> None:
    text = _contract("{every: 3}")
    rig, bridge = rig_bridge(text)
    assert bridge.contract == parse_contract(text)
    assert bridge.node_id == rig.node_id == "n" * 56
    assert (bridge.rank, bridge.size) == (0, 1)
    rig.wait(lambda: "RankJoined" in rig.kinds(), "hello")
    assert rig.reports[0] == RankJoined(0, 1, rig.node_id)


def test_no_run_dir_fails_at_once() -> None:
    start = time.monotonic()
    with pytest.raises(RuntimeUnavailableError, match=r"\$DOREISA_RUN_DIR is not set.*doreisa run"):
        Bridge(SingleProcessComm())
    assert time.monotonic() - start < 1


def test_no_node_fails_after_connect_timeout(run_dir: str) -> None:
    start = time.monotonic()
    nodes = re.escape(f"{run_dir}/nodes")
    match = rf"rank 0: no doreisa runtime after 0.5 s \(no node actor registered for host .* in {nodes}\)"
    with pytest.raises(RuntimeUnavailableError, match=match):
        Bridge(SingleProcessComm(), run_dir=run_dir, connect_timeout=0.5)
    assert 0.5 <= time.monotonic() - start < 5


def test_node_of_another_host_is_not_used(node: Callable[..., Rig]) -> None:
    rig = node(_contract(), host="elsewhere")
    with pytest.raises(RuntimeUnavailableError, match=r"no node actor registered for host"):
        Bridge(SingleProcessComm(), run_dir=rig.run_dir, connect_timeout=0.2)


def test_env_node_picks_the_node_whatever_its_host(node: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch) -> None:
    rig = node(_contract(), host="elsewhere")
    monkeypatch.setenv(_names.ENV_NODE, rig.node_id)
    monkeypatch.setenv(_names.ENV_RUN_DIR, rig.run_dir)
    with Bridge(SingleProcessComm(), connect_timeout=5) as bridge:
        assert bridge.node_id == rig.node_id


def test_stop_removes_socket_and_description(node: Callable[..., Rig]) -> None:
    rig = node(_contract())
    nodes = Path(rig.run_dir) / _names.NODES_SUBDIR
    assert sorted(p.name for p in nodes.iterdir()) == ["nnnnnnnnnnnnnnnn.json", "nnnnnnnnnnnnnnnn.sock"]
    rig.server.stop()
    assert not Path(rig.run_dir).exists(), "the last node actor of the host removes the run folder"


def test_the_run_folder_stays_while_another_node_actor_uses_it(node: Callable[..., Rig]) -> None:
    rig = node(_contract())
    other = Path(rig.run_dir) / _names.NODES_SUBDIR / "other-node.sock"  # a second node actor on this host
    other.touch()
    rig.server.stop()
    assert [p.name for p in other.parent.iterdir()] == ["other-node.sock"]


# -- the data path --------------------------------------------------------------------------


def test_only_wanted_steps_are_copied(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract("{every: 3}"))
    wanted = [bridge.wants("field", step) for step in range(8)]
    published = [rig.publish(bridge, "field", _data(step), step=step, time=step / 4) for step in range(8)]
    assert wanted == published == [s % 3 == 0 for s in range(8)]
    assert (bridge.stats.calls, bridge.stats.published, bridge.stats.bytes_copied) == (8, 3, 3 * 24 * 8)
    stats = rig.finish(bridge)
    assert [b.step for b in rig.blocks()] == [0, 3, 6]
    for block in rig.blocks():
        np.testing.assert_array_equal(block.ref, _data(block.step))
        assert block.ref.dtype == np.float64
        assert block.time == block.step / 4
        assert (block.index, block.chunks, block.nblocks, block.dtype) == ((0, 0), ((6,), (4,)), 1, "<f8")
        assert (block.array, block.rank, block.node) == ("field", 0, rig.node_id)
    assert rig.server.counts["blocks"] == 3
    assert stats["published"] == 3
    closed = [r for r in rig.reports if isinstance(r, RankClosed)]
    assert closed[0].stats.calls == 8


def test_unwanted_steps_send_nothing(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract("{every: 100}"))
    assert rig.publish(bridge, "field", _data(0), step=0)
    rig.wait(lambda: len(rig.blocks()) == 1, "step 0")
    before = list(rig.reports)
    for step in range(1, 100):
        assert not rig.publish(bridge, "field", _data(step), step=step)
    assert bridge.stats.published == 1
    assert bridge.stats.calls == 100
    rig.finish(bridge)
    assert rig.reports[: len(before)] == before
    assert rig.kinds()[len(before) :] == ["RankClosed"]  # 99 calls, not one message


@pytest.mark.parametrize("cadence", ["{every: 4}", "{every: 4, start: 3}", "{every: 5, start: 2, stop: 13}"])
def test_unwanted_steps_skipped_ahead_still_follow_the_rules(rig_bridge: MakeRig, cadence: str) -> None:
    # with a cadence nothing can change, the bridge knows the next wanted step in advance
    rig, bridge = rig_bridge(_contract(cadence))
    steps = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 12, 13, 14, 17, 18, 30]
    published = [step for step in steps if rig.publish(bridge, "field", _data(step), step=step)]
    every = [int(x) for x in re.findall(r"\d+", cadence)]
    start = every[1] if len(every) > 1 else 0
    stop = every[2] if len(every) > 2 else 10**9
    assert published == [s for s in steps if start <= s <= stop and (s - start) % every[0] == 0]
    with pytest.raises(BlockMismatchError, match="step 29 after step 30; steps must increase"):
        rig.publish(bridge, "field", _data(29), step=29)
    assert bridge.stats.calls == len(steps) + 1


def test_published_data_is_a_copy(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract())
    block = _data(0)
    rig.publish(bridge, "field", block, step=0)
    block[...] = -1.0  # the simulation overwrites its field right away
    rig.finish(bridge)
    np.testing.assert_array_equal(rig.ref(0), _data(0))


def test_non_contiguous_block(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract())
    big = np.arange(48.0).reshape(12, 4)
    rig.publish(bridge, "field", big[::2], step=0)
    rig.publish(bridge, "field", np.asfortranarray(_data(1)), step=1)
    rig.finish(bridge)
    np.testing.assert_array_equal(rig.ref(0), big[::2])
    np.testing.assert_array_equal(rig.ref(1), _data(1))


def test_region_selection_copies_only_the_region(rig_bridge: MakeRig) -> None:
    select = "    select: [{start: 1, stop: 5, step: 2}, {step: 3}]"
    rig, bridge = rig_bridge(_contract(array=select))
    assert rig.publish(bridge, "field", _data(0), step=0)
    assert bridge.stats.bytes_copied == 2 * 2 * 8
    rig.finish(bridge)
    np.testing.assert_array_equal(rig.ref(0), _data(0)[1:5:2, ::3])
    assert rig.blocks()[0].chunks == ((2,), (2,))


def test_downsample_preprocess(rig_bridge: MakeRig) -> None:
    extra = "    select: [{start: 1}, {}]\n    preprocess: {function: downsample, params: {factor: 2}}"
    rig, bridge = rig_bridge(_contract(array=extra))
    rig.publish(bridge, "field", _data(2), step=2)
    rig.finish(bridge)
    np.testing.assert_array_equal(rig.ref(2), _data(2)[1:][::2, ::2])
    assert rig.blocks()[0].chunks == ((3,), (2,))


def test_cast_preprocess(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract(array="    preprocess: {function: cast, params: {dtype: float32}}"))
    rig.publish(bridge, "field", _data(0), step=0)
    assert bridge.stats.bytes_copied == 24 * 4
    rig.finish(bridge)
    assert rig.ref(0).dtype == np.float32
    assert rig.blocks()[0].dtype == "<f4"
    np.testing.assert_array_equal(rig.ref(0), _data(0, "float32"))


def test_numpy_integer_step_is_accepted(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract())
    assert rig.publish(bridge, "field", _data(0), step=np.int64(0))
    assert rig.publish(bridge, "field", _data(1), step=np.int32(1), time=np.float64(0.5))
    rig.finish(bridge)
    assert [(b.step, b.time) for b in rig.blocks()] == [(0, None), (1, 0.5)]
    assert all(type(b.step) is int for b in rig.blocks())


def test_time_cadence(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract("{every_time: 0.5}"))
    times = [0.0, 0.3, 0.6, 0.9, 1.2]
    published = [rig.publish(bridge, "field", _data(s), step=s, time=t) for s, t in enumerate(times)]
    assert published == [True, False, True, False, True]
    rig.finish(bridge)
    assert [(b.step, b.time) for b in rig.blocks()] == [(0, 0.0), (2, 0.6), (4, 1.2)]


@pytest.mark.parametrize(
    ("cadence", "steps"),
    [
        ("{every: 1}", [0, 1, 2, 5, 6, 9]),  # gaps in the step numbers
        ("{every: 3}", list(range(14))),
        ("{every: 3}", [0, 2, 4, 7, 9, 10, 12, 13]),  # wanted steps 3 and 6 never published
        ("{every: 4, start: 5, stop: 13}", list(range(20))),
        ("{every: 2, stop: 5}", [1, 2, 4, 6, 8]),
    ],
)
def test_a_fixed_cadence_copies_exactly_its_steps(rig_bridge: MakeRig, cadence: str, steps: list[int]) -> None:
    # nothing steers: wanted and unwanted steps both take the bridge's fast paths after the first one
    text = _contract(cadence, extra="backpressure: {max_in_flight: 100}")  # no analytics here say 'done'
    rig, bridge = rig_bridge(text)
    oracle = ArrayCadence(parse_contract(text).cadence_of("field"))
    published = [s for s in steps if rig.publish(bridge, "field", _data(s), step=s)]
    assert published == [s for s in steps if oracle.wanted(s, None)]
    rig.finish(bridge)
    assert [b.step for b in rig.blocks()] == published
    for block in rig.blocks():
        np.testing.assert_array_equal(rig.ref(block.step), _data(block.step))


def test_close_returns_counts_and_no_ring_file_is_left(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract("{every: 2}"))
    path = _ring_path(rig.run_dir)
    assert not os.path.exists(path)
    for step in range(5):
        rig.publish(bridge, "field", _data(step), step=step)
    assert not os.path.exists(path), "the node removes the name once both sides have the ring mapped"
    stats = rig.finish(bridge)
    assert not os.path.exists(path)
    assert {k: stats[k] for k in ("calls", "published", "bytes_copied", "skipped", "dropped", "not_selected")} == {
        "calls": 5,
        "published": 3,
        "bytes_copied": 3 * 24 * 8,
        "skipped": 0,
        "dropped": 0,
        "not_selected": 0,
    }
    assert bridge.close() == stats  # twice is harmless
    with pytest.raises(BridgeError, match=r"publish\(\) after close\(\)"):
        bridge.publish("field", _data(6), step=6)


# -- backpressure and a missing node: the simulation is never crashed ------------------------


def test_backpressure_skip(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract(extra="backpressure: {max_in_flight: 2, policy: skip}"))
    assert [rig.publish(bridge, "field", _data(s), step=s) for s in range(3)] == [True, True, False]
    assert (bridge.stats.skipped, bridge.stats.skipped_steps) == (1, [("field", 2)])
    assert not rig.publish(bridge, "field", _data(3), step=3)  # still full: nothing analysed
    rig.server.progress(Done((("field", 0),)))
    assert rig.publish(bridge, "field", _data(4), step=4)
    assert not rig.publish(bridge, "field", _data(5), step=5)
    stats = rig.finish(bridge)
    assert [b.step for b in rig.blocks()] == [0, 1, 4]
    assert (stats["published"], stats["skipped"], stats["skipped_steps"]) == (
        3,
        3,
        [["field", 2], ["field", 3], ["field", 5]],
    )
    np.testing.assert_array_equal(rig.ref(4), _data(4))


def test_backpressure_block_detaches_after_timeout(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract(extra="backpressure: {max_in_flight: 2, policy: block}\ntimeouts: {block: 0.5}"))
    assert rig.publish(bridge, "field", _data(0), step=0)
    assert rig.publish(bridge, "field", _data(1), step=1)
    start = time.monotonic()
    assert not rig.publish(bridge, "field", _data(2), step=2)  # waits for room, then gives up without raising
    assert 0.45 <= time.monotonic() - start < 5
    assert bridge.stats.dropped == 1
    assert not bridge.wants("field", 3)
    assert [rig.publish(bridge, "field", _data(s), step=s) for s in (3, 4)] == [False, False]
    stats = bridge.close()
    assert (stats["published"], stats["dropped"]) == (2, 3)
    rig.wait(lambda: "RankLost" in rig.kinds(), "the node to see the rank leave")
    assert [b.step for b in rig.blocks()] == [0, 1]


def test_backpressure_block_resumes_when_analysed(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract(extra="backpressure: {max_in_flight: 1, policy: block}\ntimeouts: {block: 5}"))
    for step in range(4):
        assert rig.publish(bridge, "field", _data(step), step=step)
        rig.server.progress(Done((("field", step),)))
    rig.finish(bridge)
    assert [b.step for b in rig.blocks()] == [0, 1, 2, 3]


def test_node_gone_after_first_copy_drops_quietly(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract())
    assert rig.publish(bridge, "field", _data(0), step=0)
    rig.wait(lambda: len(rig.blocks()) == 1, "step 0")
    rig.server.stop()
    assert not rig.publish(bridge, "field", _data(1), step=1)
    assert not rig.publish(bridge, "field", _data(2), step=2)
    assert (bridge.stats.published, bridge.stats.dropped) == (1, 2)
    assert bridge.close()["dropped"] == 2


def test_node_gone_before_first_copy_drops_quietly(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract())
    rig.server.stop()
    assert not rig.publish(bridge, "field", _data(0), step=0)
    assert bridge.stats.dropped == 1


def test_close_after_a_burst_of_frees(node: Callable[..., Rig]) -> None:
    gate = threading.Event()

    def slow_put(view: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        gate.wait(30)
        return view.copy()

    rig = node(_contract(extra="timeouts: {step: 0.3}"), put=slow_put)
    with Bridge(SingleProcessComm(), run_dir=rig.run_dir, connect_timeout=5) as bridge:
        assert bridge.publish("field", _data(0), step=0)
        assert bridge.publish("field", _data(1), step=1)
        gate.set()  # the node frees both slots back to back
        rig.wait(lambda: len(rig.blocks()) == 2, "both blocks")
    rig.wait(lambda: "RankClosed" in rig.kinds() or "RankLost" in rig.kinds(), "the rank to leave")
    assert rig.kinds()[-1] == "RankClosed"


@pytest.mark.parametrize(
    ("slot_size", "in_flight", "staging", "slots"),
    [
        (192, 4, 64 << 20, 4),  # the default max_in_flight bounds the ring
        (192, 1, 64 << 20, 1),
        (512 << 10, 1000, 64 << 20, 128),  # a burst of 128 steps fits before publish waits
        (1 << 20, 1000, 64 << 20, 64),
        (64 << 20, 1000, 64 << 20, MIN_RING_SLOTS),  # large blocks still get a few slots
        (1 << 20, 1000, 1, MIN_RING_SLOTS),
        (64, 10**6, 64 << 20, MAX_RING_SLOTS),  # tiny blocks: a million slots would cost seconds of views
    ],
)
def test_ring_slots(slot_size: int, in_flight: int, staging: int, slots: int) -> None:
    assert ring_slots(slot_size, in_flight, staging) == slots


def _slots_seen(
    node: Callable[..., Rig], contract: str, put_delay: float, steps: int, data: Callable[[int], np.ndarray[Any, Any]]
) -> tuple[Rig, list[int], Bridge]:
    """Publish ``steps`` steps to a node whose put takes ``put_delay`` s; the slot (address) of each put."""
    addresses: list[int] = []

    def put(view: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        addresses.append(view.ctypes.data)
        time.sleep(put_delay)
        return view.copy()

    rig = node(contract, put=put)
    bridge = Bridge(SingleProcessComm(), run_dir=rig.run_dir, connect_timeout=5)
    for step in range(steps):
        assert bridge.publish("field", data(step), step=step)
        if not put_delay:
            rig.wait(lambda n=step + 1: len(rig.blocks()) >= n, "the node to take the block")
    return rig, addresses, bridge


def _all_blocks_intact(rig: Rig, bridge: Bridge, steps: int, data: Callable[[int], np.ndarray[Any, Any]]) -> None:
    assert bridge.close()["published"] == steps
    rig.wait(lambda: len(rig.blocks()) == steps, "every block")
    assert sorted(b.step for b in rig.blocks()) == list(range(steps))
    for block in rig.blocks():  # each slot was rewritten only after the node had copied it
        np.testing.assert_array_equal(block.ref, data(block.step))


@pytest.mark.parametrize(
    ("handover", "poll"),
    [("{}", True), ("{}", False), ("{linger_ms: 0}", True)],
    ids=["polls", "never-where-stores-reorder", "never-by-contract"],
)
def test_posts_wake_the_node_only_when_it_sleeps(node: Callable[..., Rig], handover: str, poll: bool) -> None:
    rig = node(_contract(extra=f"backpressure: {{max_in_flight: 100}}\nhandover: {handover}"), poll=poll)
    polls = poll and handover == "{}"
    bridge = Bridge(SingleProcessComm(), run_dir=rig.run_dir, connect_timeout=5)
    state = bridge._arrays["field"]
    assert bridge.publish("field", _data(0), step=0)
    assert isinstance(state.stagings[0], RingStaging) and bridge._link.wakes == 1  # a new ring starts asleep
    ring = state.stagings[0].ring
    rig.wait(lambda: len(rig.blocks()) == 1, "step 0")
    for step in range(1, 20):  # back to back: a polling node is awake all along (linger_ms: 250)
        assert bridge.publish("field", _data(step), step=step)
    rig.wait(lambda: len(rig.blocks()) == 20, "20 blocks")
    wakes = bridge._link.wakes
    assert wakes < 10 if polls else wakes == 20  # polling: the first blocks, until the node has seen one
    if polls:
        rig.wait(lambda: ring.control[ASLEEP] == 1, "the node to fall asleep")
        assert bridge.publish("field", _data(20), step=20)
        assert bridge._link.wakes == wakes + 1
        rig.wait(lambda: len(rig.blocks()) == 21, "the block that woke the node")
    stats = rig.finish(bridge)
    assert stats["wakes"] == bridge._link.wakes
    assert [b.step for b in rig.blocks()] == list(range(21 if polls else 20))
    for block in rig.blocks():
        np.testing.assert_array_equal(block.ref, _data(block.step))


def test_blocks_posted_to_a_node_that_died_polling_are_counted_dropped(node: Callable[..., Rig]) -> None:
    rig = node(_contract(extra="timeouts: {step: 30}"))
    bridge = Bridge(SingleProcessComm(), run_dir=rig.run_dir, connect_timeout=5)
    assert rig.publish(bridge, "field", _data(0), step=0)
    assert bridge.publish("field", _data(1), step=1)  # the node polls: no wake, no system call
    rig.wait(lambda: len(rig.blocks()) == 2, "step 1")
    rig.server._set_asleep = lambda asleep: None  # type: ignore[method-assign]  # a crash: no goodbye
    rig.stop_node()
    assert bridge.publish("field", _data(2), step=2)  # the rank cannot tell yet
    stats = bridge.close()  # finds the socket closed without waiting for timeouts.step
    assert (stats["published"], stats["dropped"]) == (2, 1)
    assert stats["bytes_copied"] == 2 * _data(0).nbytes, "the block never taken is not counted copied"


def test_paced_steps_reuse_the_slot_freed_last(node: Callable[..., Rig]) -> None:
    contract = _contract(extra="backpressure: {max_in_flight: 100}")
    rig, addresses, bridge = _slots_seen(node, contract, 0.0, 6, _data)
    _all_blocks_intact(rig, bridge, 6, _data)
    assert len(set(addresses)) == 1  # the same cached slot every step, not a rotation over 100 slots


def test_a_burst_faster_than_the_node_is_staged(node: Callable[..., Rig]) -> None:
    contract = _contract(extra="backpressure: {max_in_flight: 100, staging_mb: 1}")  # 100 slots
    rig, _, bridge = _slots_seen(node, contract, 0.005, 12, _data)
    _all_blocks_intact(rig, bridge, 12, _data)


def test_a_full_ring_waits_for_the_node(node: Callable[..., Rig]) -> None:
    contract = """
arrays:
  field: {dtype: float64, shape: [512, 256], block: [512, 256]}
cadence: {every: 1}
backpressure: {max_in_flight: 100, staging_mb: 2}
"""  # 1 MiB blocks, 2 MiB of staging: the ring has MIN_RING_SLOTS slots

    def data(step: int) -> np.ndarray[Any, Any]:
        return np.full((512, 256), float(step))

    gate = threading.Event()
    addresses: list[int] = []

    def put(view: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        addresses.append(view.ctypes.data)
        gate.wait(30)
        return view.copy()

    rig = node(contract, put=put)
    bridge = Bridge(SingleProcessComm(), run_dir=rig.run_dir, connect_timeout=5)
    for step in range(MIN_RING_SLOTS):  # the node holds the first block at the gate: the others fill the ring
        assert bridge.publish("field", data(step), step=step)
    opener = threading.Timer(0.2, gate.set)
    opener.start()
    assert bridge.publish("field", data(MIN_RING_SLOTS), step=MIN_RING_SLOTS)
    assert gate.is_set(), "publish returned only once the node had freed a slot"
    for step in range(MIN_RING_SLOTS + 1, 9):
        assert bridge.publish("field", data(step), step=step)
    _all_blocks_intact(rig, bridge, 9, data)
    assert len(set(addresses)) == MIN_RING_SLOTS
    opener.join()


# -- the node side --------------------------------------------------------------------------


def _raw_rank(rig: Rig, rank: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(rig.server.socket_path)
    sock.sendall(encode(Hello(rank, 8, 1, "h")))
    welcome = recv_one(sock, MessageReader(Welcome), 5)
    assert isinstance(welcome, Welcome)
    return sock


def _frame(record: dict[str, Any]) -> bytes:
    """A framed message with any content, as another version (or a bug) could send."""
    data = msgspec.msgpack.encode(record)
    return struct.pack("!I", len(data)) + data


def test_bad_message_is_reported_and_the_node_keeps_serving(node: Callable[..., Rig]) -> None:
    rig = node(_contract())
    sock = _raw_rank(rig, 7)
    sock.sendall(_frame({"t": "RingOpened", "array": "field"}))  # no path, no slots
    rig.wait(lambda: "RankError" in rig.kinds(), "the error event")
    (error,) = [r for r in rig.reports if isinstance(r, RankError)]
    assert (error.rank, error.node) == (7, rig.node_id)
    assert "Object missing required field `ring_id`" in error.error
    assert "expected one of Hello, RingOpened, Close" in error.error
    with Bridge(SingleProcessComm(), run_dir=rig.run_dir, connect_timeout=5) as bridge:
        assert rig.publish(bridge, "field", _data(0), step=0)
    rig.wait(lambda: len(rig.blocks()) == 1, "a block from the good rank")
    sock.close()
    rig.wait(lambda: "RankLost" in rig.kinds(), "the lost event")
    assert [r for r in rig.reports if isinstance(r, RankLost)] == [RankLost(7, rig.node_id)]


def test_a_message_of_an_unknown_type_is_reported_by_name(node: Callable[..., Rig]) -> None:
    rig = node(_contract())
    sock = _raw_rank(rig, 2)
    sock.sendall(_frame({"t": "Gossip", "text": "hi"}))
    rig.wait(lambda: "RankError" in rig.kinds(), "the error event")
    (error,) = [r for r in rig.reports if isinstance(r, RankError)]
    assert "Invalid value 'Gossip' - at `$.t`" in error.error
    sock.close()


def test_messages_after_a_bad_one_are_handled(node: Callable[..., Rig]) -> None:
    rig = node(_contract())
    sock = _raw_rank(rig, 3)
    bad = _frame({"t": "RingOpened", "array": "field"})
    sock.sendall(bad + encode(Close(3, RankStats())))
    rig.wait(lambda: "RankError" in rig.kinds(), "the error event")
    try:
        rig.wait(lambda: "RankClosed" in rig.kinds(), "the close behind the bad message")
    finally:
        sock.close()


class _RawRing:
    """The ring of a raw rank: block ``(rank, 0)`` of a ``6 * ranks`` x 4 array, announced on ``sock``."""

    def __init__(self, sock: socket.socket, run_dir: str, rank: int, ranks: int, slots: int = 1) -> None:
        size = slot_bytes(24 * 8)
        self.sock = sock
        self.ring = ShmRing(os.path.join(run_dir, f"ring-{rank}"), slots, size, create=True)
        grid = ((6,) * ranks, (4,))
        sock.sendall(encode(RingOpened("field", 0, (rank, 0), self.ring.path, slots, size, SHAPE, "<f8", grid, ranks)))
        self.views = self.ring.views(SHAPE, np.dtype("float64"))

    def post(
        self, slot: int, step: int, time: float | None = None, *, data: int | None = None, then: bytes = b""
    ) -> None:
        """Write ``_data(data or step)`` into ``slot``, post it as a rank does, wake the node (and send ``then``)."""
        self.views[slot][...] = _data(step if data is None else data)
        self.ring.steps[slot], self.ring.times[slot] = step, NAN if time is None else time
        self.ring.posted[slot] += 1
        self.ring.control[POSTS] += 1
        self.sock.sendall(WAKE + then)


def test_a_block_whose_rank_left_before_its_free_is_kept(
    node: Callable[..., Rig], run_dir: str, copy_blocks: Callable[[Any], Any]
) -> None:
    # A rank's close() returns once it sees its last slot freed in shared memory, before the node's
    # 'free' message is sent: sending it then fails (EPIPE), and the block must be reported anyway.
    gate = threading.Event()

    def put_after_the_rank_left(views: Any) -> Any:
        gate.wait(30)
        return copy_blocks(views)

    rig = node(_contract(), put=put_after_the_rank_left)
    sock = _raw_rank(rig, 1)
    _RawRing(sock, run_dir, 0, 1).post(0, 50, then=encode(Close(1, RankStats(calls=1))))
    sock.close()
    gate.set()
    rig.wait(lambda: "RankClosed" in rig.kinds(), "the rank's close")
    assert rig.kinds() == ["RankJoined", "BlockRecord", "RankClosed"]  # no error, no 'lost'
    np.testing.assert_array_equal(rig.ref(50), _data(50))


def test_a_rank_that_left_without_close_is_lost_even_after_a_failed_send(node: Callable[..., Rig]) -> None:
    rig = node(_contract())
    sock = _raw_rank(rig, 2)
    sock.close()
    rig.server.progress(Done((("field", 0),)))  # may fail (EPIPE) or not, depending on who is first
    rig.wait(lambda: "RankLost" in rig.kinds(), "the lost event")
    assert rig.kinds() == ["RankJoined", "RankLost"]


@pytest.mark.parametrize("placement", ["in_situ", "in_transit"])
def test_blocks_of_a_step_that_arrive_together_are_stored_as_one_object(
    node: Callable[..., Rig], run_dir: str, copy_blocks: Callable[[Any], Any], placement: str
) -> None:
    stored: list[int | None] = []  # per put (or relay): how many blocks it stored together (None: a block alone)
    gate = threading.Event()

    def put(views: Any) -> Any:
        stored.append(len(views) if isinstance(views, list) else None)
        gate.wait(30)
        return copy_blocks(views)

    contract = "arrays:\n  field: {dtype: float64, shape: [12, 4], block: [6, 4]}\ncadence: {every: 1}\n"
    parse_contract(contract)  # valid, though the raw ranks here never read it
    if placement == "in_situ":
        rig = node(contract, put=put)
        where = rig.node_id
    else:
        rig, where = node(contract, relay=lambda views: (put(views), "analytics-node")), "analytics-node"
    socks = [_raw_rank(rig, rank) for rank in (0, 1)]
    rings = [_RawRing(sock, run_dir, rank, 2, slots=2) for rank, sock in enumerate(socks)]
    rings[1].post(0, 0)
    # The node waits at the gate. Rank 1's socket, read last, comes first in the next round's events:
    rig.wait(lambda: stored == [None], "the node to store step 0 of rank 1")
    for rank, ring in enumerate(rings):  # both arrive while the node is busy: one round
        ring.post(1, 1, 0.5, data=10 + rank)
    gate.set()
    rig.wait(lambda: len(rig.blocks()) == 3, "three blocks")
    assert stored == [None, 2]
    first, *pair = rig.blocks()
    assert (first.step, first.part, first.where) == (0, None, where)
    assert [(b.step, b.rank, b.part, b.index, b.time, b.where) for b in pair] == [
        (1, 0, 0, (0, 0), 0.5, where),
        (1, 1, 1, (1, 0), 0.5, where),
    ]
    assert pair[0].ref is pair[1].ref  # one object, its blocks in rank order whatever order they came in
    for rank, block in enumerate(pair):
        np.testing.assert_array_equal(block.ref[block.part], _data(10 + rank))
    assert (rig.server.counts["blocks"], rig.server.counts["puts"]) == (3, 2)
    for sock in socks:  # the ranks are told that their slots are free again
        assert isinstance(recv_one(sock, MessageReader(Free), 5), Free)
        sock.close()


def test_a_ranks_steps_are_reported_in_order_whatever_order_the_ranks_come_in(
    node: Callable[..., Rig], run_dir: str, copy_blocks: Callable[[Any], Any]
) -> None:
    gate = threading.Event()
    puts: list[Any] = []

    def put(views: Any) -> Any:
        puts.append(views)
        gate.wait(30)
        return copy_blocks(views)

    rig = node("arrays:\n  field: {dtype: float64, shape: [12, 4], block: [6, 4]}\ncadence: {every: 1}\n", put=put)
    socks = [_raw_rank(rig, rank) for rank in (0, 1)]
    rings = [_RawRing(sock, run_dir, rank, 2, slots=2) for rank, sock in enumerate(socks)]
    rings[0].post(0, 0)
    # The node waits at the gate; rank 0's socket, read last, comes first in the next round's events.
    rig.wait(lambda: len(puts) == 1, "the node to store step 0 of rank 0")
    rings[0].post(1, 6)  # rank 0 is ahead: step 6 is seen first in the round
    rings[1].post(0, 5)
    rings[1].post(1, 6)
    gate.set()
    rig.wait(lambda: len(rig.blocks()) == 4, "four blocks")
    assert [(b.rank, b.step) for b in rig.blocks()] == [(0, 0), (1, 5), (0, 6), (1, 6)]
    for sock in socks:
        sock.close()


def test_a_block_the_store_refuses_is_an_error_and_its_slot_is_freed(node: Callable[..., Rig], run_dir: str) -> None:
    def full_store(views: Any) -> Any:
        raise MemoryError("object store full")

    rig = node(_contract(), put=full_store)
    sock = _raw_rank(rig, 4)
    ring = _RawRing(sock, run_dir, 0, 1)
    ring.post(0, 3)
    rig.wait(lambda: "RankError" in rig.kinds(), "the error event")
    assert recv_one(sock, MessageReader(Free), 5) == Free(0, 0)  # the rank can write the slot again
    ring.post(0, 4)  # refused again: counted, not said again
    assert recv_one(sock, MessageReader(Free), 5) == Free(0, 0)
    rig.wait(lambda: rig.server.counts["not_stored"] == 2, "the second refusal counted")
    (error,) = [r for r in rig.reports if isinstance(r, RankError)]
    assert error.rank == 4 and error.node == rig.node_id
    assert error.error.startswith(
        f"node {rig.node_id[:8]} could not store the blocks of 'field' at step 3 from ranks [4] "
        "(MemoryError: object store full); later blocks it cannot store are counted in blocks_not_stored."
    ), error.error
    assert rig.server.store_error == error.error  # what NodeCounts carries to the run's summary
    assert rig.blocks() == []
    sock.close()


def test_node_counts(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract())
    for step in range(3):
        rig.publish(bridge, "field", _data(step), step=step)
    rig.finish(bridge)
    counts = rig.server.counts
    assert (counts["blocks"], counts["ranks"]) == (3, 1)
    assert counts["bytes"] == 3 * 24 * 8  # one 64-byte aligned slot each


def test_rank_0_sends_the_monitors_values_in_batches(rig_bridge: MakeRig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_steer, "MONITOR_FLUSH_S", 3600.0)  # batches by count only: deterministic
    monitors = "monitors:\n  - {array: field, reductions: [max, mean]}"
    rig, bridge = rig_bridge(_contract("{every: 1000}", extra=monitors))
    for step in range(1, 151):  # unwanted steps: the monitors run all the same
        assert not bridge.publish("field", _data(step), step=step)
    rig.wait(lambda: len([r for r in rig.reports if isinstance(r, MonitorBatch)]) == 2, "two full batches")
    rig.finish(bridge)  # close() sends the rest before 'close'
    events = [r for r in rig.reports if isinstance(r, MonitorBatch)]
    assert [len(e.records) for e in events] == [_steer.MONITOR_BATCH, _steer.MONITOR_BATCH, 150 - 128]
    kinds = rig.kinds()
    assert max(i for i, kind in enumerate(kinds) if kind == "MonitorBatch") < kinds.index("RankClosed")
    records = [r for e in events for r in e.records]
    assert [r.step for r in records] == list(range(1, 151))
    for r in records:
        data = _data(r.step)
        assert r.values == {"max(field)": float(data.max()), "mean(field)": pytest.approx(float(data.mean()))}
        assert r.time is None


def test_a_ring_closed_before_the_node_mapped_it_is_no_error(node: Callable[..., Rig], run_dir: str) -> None:
    # A rank that opens a ring and closes before posting to it unlinks it: the node finds no file, and nothing was lost.
    rig = node(_contract())
    sock = _raw_rank(rig, 5)
    grid = ((6,), (4,))
    gone = os.path.join(run_dir, "ring-gone")
    sock.sendall(encode(RingOpened("field", 0, (0, 0), gone, 1, 256, SHAPE, "<f8", grid, 1)))
    sock.sendall(encode(Close(5, RankStats())))
    rig.wait(lambda: "RankClosed" in rig.kinds(), "the rank's close")
    assert rig.kinds() == ["RankJoined", "RankClosed"]
    sock.close()

"""The Bridge's decisions through the in-process transport: no socket, no node actor, the test plays the analytics."""

from __future__ import annotations

import numpy as np
import pytest

from doreisa.contract import parse_contract
from doreisa.errors import BlockMismatchError, BridgeError
from doreisa.runtime.protocol import Close, MonitorBatch, RingOpened
from doreisa.runtime.rank.bridge import Bridge
from doreisa.runtime.rank.comm import SingleProcessComm
from doreisa.runtime.rank.inprocess import InProcessTransport

ARRAY = "{dtype: float64, shape: [6, 4], block: [6, 4]"


def _bridge(extra: str = "", array: str = ARRAY + "}") -> tuple[Bridge, InProcessTransport]:
    transport = InProcessTransport(parse_contract(f"arrays:\n  field: {array}\n{extra}"), node_id="here")
    return Bridge(SingleProcessComm(), transport=transport), transport


def _data(step: int) -> np.ndarray:
    return np.arange(24.0).reshape(6, 4) + 100 * step


def test_wanted_steps_are_posted_as_copies_with_their_place() -> None:
    bridge, transport = _bridge("cadence: {every: 2}")
    assert bridge.node_id == "here"
    published = [bridge.publish("field", _data(s), step=s, time=s / 2) for s in range(5)]
    assert published == [True, False, True, False, True]
    assert [(p.array, p.step, p.time, p.index) for p in transport.posted] == [
        ("field", 0, 0.0, (0, 0)),
        ("field", 2, 1.0, (0, 0)),
        ("field", 4, 2.0, (0, 0)),
    ]
    for p in transport.posted:  # a copy: the simulation's array can change after publish
        np.testing.assert_array_equal(p.block, _data(p.step))
    (opened,) = [m for m in transport.sent if isinstance(m, RingOpened)]
    assert (opened.array, opened.shape, opened.chunks, opened.nblocks) == ("field", (6, 4), ((6,), (4,)), 1)


def test_region_and_operator_shape_what_is_posted() -> None:
    array = ARRAY + ", select: [{start: 1, stop: 5}, {}], preprocess: {function: cast, params: {dtype: float32}}}"
    bridge, transport = _bridge(array=array)
    assert bridge.publish("field", _data(3), step=3)
    (posted,) = transport.posted
    assert posted.block.dtype == np.float32
    np.testing.assert_array_equal(posted.block, _data(3)[1:5].astype(np.float32))


def test_block_policy_waits_for_the_analytics_and_detaches_when_no_one_answers() -> None:
    bridge, transport = _bridge("backpressure: {max_in_flight: 2}")
    assert bridge.publish("field", _data(0), step=0) and bridge.publish("field", _data(1), step=1)
    transport.done(("field", 0))  # read at the next publish: room for step 2
    assert bridge.publish("field", _data(2), step=2)
    assert not bridge.publish("field", _data(3), step=3)  # full, and nothing answers: the rank detaches
    assert transport.detached is not None and "waited for room for step 3" in transport.detached
    assert not bridge.publish("field", _data(4), step=4)
    assert (bridge.stats.published, bridge.stats.dropped) == (3, 2)
    assert [p.step for p in transport.posted] == [0, 1, 2]


def test_skip_policy_counts_the_steps_it_skips() -> None:
    bridge, transport = _bridge("backpressure: {max_in_flight: 1, policy: skip}")
    assert bridge.publish("field", _data(0), step=0)
    assert not bridge.publish("field", _data(1), step=1)
    transport.done(("field", 0))
    assert bridge.publish("field", _data(2), step=2)  # full: the answer is read first
    assert not bridge.publish("field", _data(3), step=3)
    assert (bridge.stats.skipped, bridge.stats.skipped_steps) == (2, [("field", 1), ("field", 3)])
    assert [p.step for p in transport.posted] == [0, 2]
    assert transport.detached is None


def test_close_sends_the_ranks_counts_last() -> None:
    bridge, transport = _bridge("monitors:\n  - {array: field, reductions: [max]}\ncadence: {every: 100}")
    for step in range(3):
        bridge.publish("field", _data(step), step=step)
    stats = bridge.close()
    *_, batch, close = transport.sent
    assert isinstance(batch, MonitorBatch)
    assert [(r.step, r.values) for r in batch.records] == [(s, {"max(field)": float(_data(s).max())}) for s in range(3)]
    assert isinstance(close, Close) and close.rank == 0
    assert close.stats.calls == stats["calls"] == 3 and close.stats.published == stats["published"] == 1
    with pytest.raises(BridgeError, match=r"publish\(\) after close\(\)"):
        bridge.publish("field", _data(100), step=100)


def test_the_bridges_counters_are_the_fields_of_the_record_it_sends() -> None:
    # BridgeStats is the rank's mutable twin of RankStats (a dataclass: cheaper to bump on the hot path)
    import dataclasses

    from doreisa.runtime.protocol import RankStats
    from doreisa.runtime.rank.bridge import BridgeStats

    assert [f.name for f in dataclasses.fields(BridgeStats)] == list(RankStats.__struct_fields__)


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (2**63, r"rank 0: step must be in \[0, 2\*\*63 - 1\], got 9223372036854775808"),
        (-1, r"step must be in \[0, 2\*\*63 - 1\], got -1"),
        (True, r"rank 0: step must be an integer, got True"),
        (2.0, r"step must be an integer, got 2.0"),
    ],
)
def test_a_step_out_of_range_is_refused_before_anything_changes(step: object, match: str) -> None:
    for cadence in ("{every: 1}", "{every: 1000}"):  # the path that copies, and the fast path of unwanted steps
        bridge, transport = _bridge(f"cadence: {cadence}")
        assert bridge.publish("field", _data(3), step=3) == (cadence == "{every: 1}")
        with pytest.raises(BlockMismatchError, match=match):
            bridge.publish("field", _data(4), step=step)  # type: ignore[arg-type]
        assert bridge.publish("field", _data(4), step=np.int64(4)) == (cadence == "{every: 1}")  # not poisoned
        assert [p.step for p in transport.posted] == ([3, 4] if cadence == "{every: 1}" else [])


def test_the_largest_step_is_valid_and_never_mistaken_for_the_next_wanted_one() -> None:
    bridge, transport = _bridge("cadence: {every: 10}")
    assert bridge.publish("field", _data(0), step=0)
    assert not bridge.publish("field", _data(1), step=2**63 - 1)  # not a multiple of 10: unwanted
    assert [p.step for p in transport.posted] == [0]


def test_a_failing_trigger_is_reported_once_then_with_its_count() -> None:
    from doreisa.runtime.protocol import TriggerFailed

    extra = (
        "cadence: {every: 100}\nmonitors:\n  - {array: field, reductions: [min]}\n"
        "triggers:\n  - {name: t, when: 'min(field) / min(field) > 2', action: {cadence: {every: 1}}}"
    )
    bridge, transport = _bridge(extra)
    for step in range(5):  # min(field) is 0 at every step: 0 / 0 fails at every step
        bridge.publish("field", _data(step) - 100 * step, step=step)
    assert [m for m in transport.sent if isinstance(m, TriggerFailed)] == [
        TriggerFailed(0, 0, next(m.error for m in transport.sent if isinstance(m, TriggerFailed)))
    ]
    bridge.close()
    failed = [m for m in transport.sent if isinstance(m, TriggerFailed)]
    assert [(m.step, m.count) for m in failed] == [(0, 1), (0, 5)]
    assert "division by zero" in failed[0].error and failed[0].error == failed[1].error


def test_a_view_is_copied_from_its_arrays_publish_at_its_own_cadence() -> None:
    view = "  zoom: {of: field, select: [{start: 2, stop: 4}, {start: 1, stop: 3}], cadence: {every: 3}}\n"
    bridge, transport = _bridge(view + "cadence: {every: 2}\nbackpressure: {max_in_flight: 100}")
    copied = [bridge.publish("field", _data(s), step=s) for s in range(7)]
    assert copied == [True, False, True, True, True, False, True], "the array's steps and the view's"
    assert [(p.array, p.step) for p in transport.posted] == [
        ("field", 0),
        ("zoom", 0),
        ("field", 2),
        ("zoom", 3),
        ("field", 4),
        ("field", 6),
        ("zoom", 6),
    ]
    for p in transport.posted:
        whole = _data(p.step)
        np.testing.assert_array_equal(p.block, whole if p.array == "field" else whole[2:4, 1:3])
    assert bridge.stats.published == 7 and bridge.stats.bytes_copied == 4 * 24 * 8 + 3 * 4 * 8
    with pytest.raises(BlockMismatchError, match="array 'zoom' is a view of 'field': publish 'field'"):
        bridge.publish("zoom", _data(7)[2:4, 1:3], step=7)

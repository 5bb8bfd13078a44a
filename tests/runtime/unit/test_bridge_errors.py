"""Bad input at Bridge.publish: refused with a clear message, before anything is copied."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from doreisa.errors import BlockMismatchError, LayoutError
from doreisa.runtime.rank.bridge import Bridge

Rig = Any  # conftest.Rig
MakeRig = Callable[[str], tuple[Rig, Bridge]]

SHAPE = (6, 4)


def _contract(cadence: str = "{every: 1}", extra: str = "", preprocess: str = "null") -> str:
    return f"""
arrays:
  field: {{dtype: float64, shape: [6, 4], block: [6, 4], preprocess: {preprocess}}}
cadence: {cadence}
{extra}
"""


def _data(step: int, dtype: str = "float64") -> np.ndarray[Any, Any]:
    return (np.arange(24).reshape(SHAPE) + 100 * step).astype(dtype)


# -- bad input: raised before any copy ----------------------------------------------------


BAD_LATER_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown array", {"name": "nope"}, r"rank 0: array 'nope' is not in the contract; known arrays: \['field'\]"),
    (
        "float32",
        {"block": _data(1, "float32")},
        r"array 'field' step 1: block dtype is float32; the contract says float64",
    ),
    ("object", {"block": _data(1).astype(object)}, r"step 1: block dtype is object; the contract says float64"),
    ("0-d", {"block": np.array(1.0)}, r"step 1: block is 0-D; the contract's array is 2-D"),
    ("list", {"block": _data(1).tolist()}, r"step 1: block must be a numpy array, got list"),
    (
        "shape",
        {"block": np.zeros((5, 4))},
        r"step 1: block shape \(5, 4\) differs from its shape at the first publish, \(6, 4\)",
    ),
    (
        "offset",
        {"offset": (1, 0)},
        r"step 1: offset \(1, 0\) differs from the first publish, \(0, 0\); it must stay fixed",
    ),
    ("same step", {"step": 0}, r"rank 0: array 'field' step 0 after step 0; steps must increase"),
    ("negative step", {"step": -1}, r"rank 0: step must be in \[0, 2\*\*63 - 1\], got -1"),
    ("float step", {"step": 1.5}, r"rank 0: step must be an integer, got 1.5"),
    ("string step", {"step": "1"}, r"rank 0: step must be an integer, got '1'"),
]


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in BAD_LATER_CALLS], ids=[c[0] for c in BAD_LATER_CALLS])
def test_bad_publish_raises_before_any_copy(rig_bridge: MakeRig, call: dict[str, Any], match: str) -> None:
    rig, bridge = rig_bridge(_contract())
    assert rig.publish(bridge, "field", _data(0), step=0)
    args = {"name": "field", "block": _data(1), "step": 1, **call}
    with pytest.raises(BlockMismatchError, match=match):
        bridge.publish(args.pop("name"), args.pop("block"), **args)
    assert (bridge.stats.published, bridge.stats.bytes_copied) == (1, 24 * 8)
    rig.finish(bridge)
    assert [b.step for b in rig.blocks()] == [0]


def test_steps_out_of_order(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract())
    rig.publish(bridge, "field", _data(2), step=2)
    with pytest.raises(BlockMismatchError, match=r"array 'field' step 1 after step 2; steps must increase"):
        bridge.publish("field", _data(1), step=1)
    rig.finish(bridge)
    assert [b.step for b in rig.blocks()] == [2]


def test_wrong_block_shape_at_first_publish(rig_bridge: MakeRig) -> None:
    _, bridge = rig_bridge(_contract())
    with pytest.raises(LayoutError, match=r"block has shape \(5, 4\); the contract says \(6, 4\)"):
        bridge.publish("field", np.zeros((5, 4)), step=0)
    assert bridge.stats.published == 0


FIRST_CALLS = [
    ("float32", _data(0, "float32"), r"block dtype is float32; the contract says float64"),
    ("object", _data(0).astype(object), r"block dtype is object"),
    ("0-d", np.array(1.0), r"block is 0-D"),
]


@pytest.mark.parametrize(("block", "match"), [c[1:] for c in FIRST_CALLS], ids=[c[0] for c in FIRST_CALLS])
def test_bad_block_at_first_publish_is_a_mismatch(rig_bridge: MakeRig, block: Any, match: str) -> None:
    _, bridge = rig_bridge(_contract())
    with pytest.raises(BlockMismatchError, match=match):
        bridge.publish("field", block, step=0)


def test_user_preprocess_changing_dtype_undeclared(rig_bridge: MakeRig, caplog: pytest.LogCaptureFixture) -> None:
    rig, bridge = rig_bridge(_contract(extra="timeouts: {step: 0.2}", preprocess="'numpy:isnan'"))
    match = r"'numpy:isnan' of 'field' returned bool\[6, 4\]; expected float64\[6, 4\] \(declare .* params\.dtype\)"
    with pytest.raises(BlockMismatchError, match=match):
        bridge.publish("field", _data(0), step=0)
    with caplog.at_level(logging.WARNING, logger="doreisa.bridge"):
        stats = bridge.close()
    assert caplog.messages == []  # no ring slot was taken and lost: close() did not wait for timeouts.step
    assert stats["published"] == 0
    assert rig.blocks() == []


def test_user_preprocess_declared_dtype(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract(preprocess="{function: 'numpy:isnan', params: {dtype: bool}}"))
    block = _data(0)
    block[1, 2] = np.nan
    assert rig.publish(bridge, "field", block, step=0)
    rig.finish(bridge)
    assert rig.blocks()[0].dtype == "|b1"
    np.testing.assert_array_equal(rig.ref(0), np.isnan(block))


def test_time_cadence_needs_time(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract("{every_time: 0.5}"))
    with pytest.raises(
        BlockMismatchError, match=r"array 'field' has a simulation-time cadence: publish\(\) needs time="
    ):
        bridge.publish("field", _data(0), step=0)
    assert bridge.stats.published == 0
    assert rig.publish(bridge, "field", _data(1), step=1, time=0.0)


def test_wants_without_time_does_not_drop_the_step(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract("{every_time: 0.5}"))
    bridge.wants("field", 0)
    assert rig.publish(bridge, "field", _data(0), step=0, time=0.0)


def test_numpy_float32_time_is_accepted(rig_bridge: MakeRig) -> None:
    rig, bridge = rig_bridge(_contract(extra="timeouts: {step: 0.2}"))
    assert rig.publish(bridge, "field", _data(0), step=0, time=np.float32(0.5))
    rig.finish(bridge)
    assert rig.blocks()[0].time == 0.5

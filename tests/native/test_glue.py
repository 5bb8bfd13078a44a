"""What libdoreisa calls in its embedded Python, without C: codes, views of a buffer, steering values."""

from __future__ import annotations

import numpy as np
import pytest

from doreisa.contract import parse_contract
from doreisa.errors import BlockMismatchError, LayoutError, RuntimeUnavailableError
from doreisa.runtime.rank.bridge import Bridge
from doreisa.runtime.rank.comm import SingleProcessComm
from doreisa.runtime.rank.inprocess import InProcessTransport
from doreisa.runtime.rank.native import ArgumentError, NativeBridge, describe


def _native() -> tuple[NativeBridge, InProcessTransport]:
    contract = parse_contract("arrays:\n  f: {dtype: float32, shape: [4, 6], block: [4, 6]}\ncadence: {every: 2}\n")
    transport = InProcessTransport(contract)
    native = NativeBridge.__new__(NativeBridge)  # as NativeBridge(comm) does, on a stand-in communicator
    native.bridge = Bridge(SingleProcessComm(), transport=transport)
    return native, transport


def test_exceptions_become_the_codes_of_doreisa_h() -> None:
    assert describe(LayoutError("holes")) == (-3, "holes")
    assert describe(BlockMismatchError("dtype")) == (-2, "dtype")
    assert describe(RuntimeUnavailableError("no run")) == (-4, "no run")
    assert describe(ArgumentError("not a number")) == (-1, "not a number")
    assert describe(TypeError("a bug")) == (-6, "TypeError: a bug"), "not mistaken for the caller's argument"


def test_a_strided_buffer_is_published_as_it_lies_and_the_fast_path_is_handed_back() -> None:
    native, transport = _native()
    memory = np.arange(6 * 8, dtype=np.float32)  # a 6 x 8 array with one ghost cell around a 4 x 6 block
    view = memoryview(memory[9:]).toreadonly()  # from the first interior element to the end
    copied, last, skip_below = native.publish("f", view, 2, (4, 6), (8, 1), None, 0, None, -1, 0)
    assert (copied, last, skip_below) == (True, 0, 2), "step 0 copied; the next wanted is 2"
    np.testing.assert_array_equal(transport.posted[0].block, memory.reshape(6, 8)[1:5, 1:7])
    assert native.close(fast_calls=3)[0] == 4, "the calls C answered alone are counted"


def test_a_steering_value_that_is_not_a_number_is_the_callers_error() -> None:
    native, _ = _native()
    assert native.feedback("dt") == (False, 0.0)
    native.bridge._steer.plan.steering.update({"dt": 0.5, "mode": "fast"})
    assert native.feedback("dt") == (True, 0.5)
    with pytest.raises(ArgumentError, match="steering value 'mode' is 'fast', not a number"):
        native.feedback("mode")

"""Device blocks on a real GPU: CuPy arrays published through the bridge, reduced on the device (issue #18).

Skipped without CuPy or a CUDA device (tests/conftest.py). Every path by which doreisa moves
data off the device goes through the copier (``to_host``, ``scalar``) or a ``float()`` of a
0-d array in an operator; an implicit host conversion of a CuPy array raises ``TypeError``, so
a host fallback would fail here rather than move the block unseen. The counting copier below
therefore sees every byte that leaves the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from doreisa.contract import parse_contract
from doreisa.runtime.protocol import MonitorBatch
from doreisa.runtime.rank.bridge import Bridge
from doreisa.runtime.rank.comm import SingleProcessComm
from doreisa.runtime.rank.device import CupyCopier, cupy_copier
from doreisa.runtime.rank.inprocess import InProcessTransport

pytestmark = pytest.mark.gpu

cp: Any = pytest.importorskip("cupy")

SHAPE = (512, 1024)  # 4 MiB of float64


class CountingCopier(CupyCopier):
    """CuPy's copier, counting what leaves the device."""

    def __init__(self) -> None:
        super().__init__(cp)
        self.bytes = 0
        self.copies = 0
        self.scalars = 0

    def to_host(self, array: Any, dst: np.ndarray[Any, Any], /) -> None:
        super().to_host(array, dst)
        self.bytes += dst.nbytes
        self.copies += 1

    def scalar(self, value: Any, /) -> float:
        self.bytes += value.nbytes
        self.scalars += 1
        return super().scalar(value)


def _bridge(array: str = "", extra: str = "", copier: Any = None) -> tuple[Bridge, InProcessTransport]:
    text = f"arrays:\n  field: {{dtype: float64, shape: {list(SHAPE)}, block: {list(SHAPE)}{array}}}\n{extra}"
    transport = InProcessTransport(parse_contract(text), node_id="gpu")
    return Bridge(SingleProcessComm(), transport=transport, copier=copier), transport


def _field(step: int) -> Any:
    return cp.random.default_rng(step).random(SHAPE)


def test_default_copier_is_cupys() -> None:
    assert isinstance(cupy_copier(), CupyCopier)


def test_a_cupy_block_is_published_with_its_values() -> None:
    bridge, transport = _bridge()
    block = _field(0)
    assert bridge.publish("field", block, step=0)
    np.testing.assert_array_equal(transport.posted[0].block, cp.asnumpy(block))
    assert bridge.stats.bytes_copied == block.nbytes


def test_the_interior_of_a_cupy_array_is_published() -> None:
    ghosts = cp.random.default_rng(3).random((SHAPE[0] + 2, SHAPE[1] + 2))
    bridge, transport = _bridge()
    assert bridge.publish("field", ghosts[1:-1, 1:-1], step=0)
    np.testing.assert_array_equal(transport.posted[0].block, cp.asnumpy(ghosts[1:-1, 1:-1]))


def test_select_and_cast_leave_the_device_reduced() -> None:
    copier = CountingCopier()
    array = ", select: [{start: 100, stop: 200}, {}], preprocess: {function: cast, params: {dtype: float32}}"
    bridge, transport = _bridge(array, copier=copier)
    block = _field(1)
    assert bridge.publish("field", block, step=0)
    np.testing.assert_array_equal(transport.posted[0].block, cp.asnumpy(block[100:200].astype(cp.float32)))
    assert copier.bytes == 100 * SHAPE[1] * 4


def test_stats_move_three_numbers() -> None:
    copier = CountingCopier()
    bridge, transport = _bridge(", preprocess: stats", copier=copier)
    block = _field(2)
    assert bridge.publish("field", block, step=0)
    host = cp.asnumpy(block)
    np.testing.assert_allclose(transport.posted[0].block.reshape(4), [host.min(), host.max(), host.sum(), host.size])
    assert copier.copies == 0  # float() of three 0-d arrays, outside the copier: 24 bytes


def test_a_monitor_on_a_device_block_moves_a_few_bytes_per_step() -> None:
    copier = CountingCopier()
    extra = "cadence: {never: true}\nmonitors:\n  - {array: field, reductions: [max, mean, nonfinite]}"
    bridge, transport = _bridge(extra=extra, copier=copier)
    blocks = [_field(s) for s in range(5)]
    for step, block in enumerate(blocks):
        assert not bridge.publish("field", block, step=step)
    bridge.close()
    assert copier.copies == 0 and bridge.stats.bytes_copied == 0
    assert copier.bytes <= 5 * 3 * 8, f"{copier.bytes} bytes left the device for 5 steps of a 4 MiB block"
    (batch,) = [m for m in transport.sent if isinstance(m, MonitorBatch)]
    for record, block in zip(batch.records, blocks, strict=True):
        assert record.values["max(field)"] == float(block.max())
        assert record.values["mean(field)"] == pytest.approx(float(block.mean()), rel=1e-12)
        assert record.values["nonfinite(field)"] == 0.0


class _DLPackOnly:
    """A device array offered through DLPack only, as JAX offers it."""

    def __init__(self, array: Any) -> None:
        self._array, self.shape, self.dtype = array, array.shape, array.dtype

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self._array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._array.__dlpack_device__()


def test_a_dlpack_device_array_is_published() -> None:
    bridge, transport = _bridge()
    block = _field(4)
    assert bridge.publish("field", _DLPackOnly(block), step=0)
    np.testing.assert_array_equal(transport.posted[0].block, cp.asnumpy(block))


def test_a_cupy_block_of_the_wrong_dtype_is_refused() -> None:
    from doreisa.errors import BlockMismatchError

    bridge, _ = _bridge()
    with pytest.raises(BlockMismatchError, match="block dtype is float32; the contract says float64"):
        bridge.publish("field", _field(0).astype(cp.float32), step=0)

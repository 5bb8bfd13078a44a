"""Device blocks through the bridge, without a GPU: host memory behind __cuda_array_interface__ or DLPack, read by
the test copier, which counts every byte that leaves the 'device' (no Ray, no MPI)."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from doreisa.contract import parse_contract
from doreisa.errors import BlockMismatchError, DeviceUnavailableError
from doreisa.runtime.protocol import MonitorBatch
from doreisa.runtime.rank.bridge import Bridge
from doreisa.runtime.rank.comm import SingleProcessComm
from doreisa.runtime.rank.device import CupyCopier, DeviceBlock, Devices
from doreisa.runtime.rank.hostdevice import HostCopier, HostDeviceArray, HostDLPackArray
from doreisa.runtime.rank.inprocess import InProcessTransport

ARRAY = "{dtype: float64, shape: [6, 4], block: [6, 4]"


def _bridge(
    extra: str = "", array: str = ARRAY + "}", copier: Any = "host"
) -> tuple[Bridge, InProcessTransport, HostCopier]:
    host = HostCopier()
    transport = InProcessTransport(parse_contract(f"arrays:\n  field: {array}\n{extra}"), node_id="here")
    bridge = Bridge(SingleProcessComm(), transport=transport, copier=host if copier == "host" else copier)
    return bridge, transport, host


def _data(step: int, dtype: str = "float64") -> np.ndarray[Any, Any]:
    return (np.arange(24.0).reshape(6, 4) + 100 * step).astype(dtype)


# -- the copy ---------------------------------------------------------------------------------


def test_a_device_block_is_copied_once_straight_into_the_slot() -> None:
    bridge, transport, copier = _bridge()
    assert bridge.publish("field", HostDeviceArray(_data(1)), step=1)
    (posted,) = transport.posted
    np.testing.assert_array_equal(posted.block, _data(1))
    assert (copier.moved.copies, copier.moved.bytes, copier.moved.scalars) == (1, _data(1).nbytes, 0)
    assert (bridge.stats.published, bridge.stats.bytes_copied) == (1, _data(1).nbytes)


def test_a_strided_device_block_keeps_its_values() -> None:
    # a simulation publishes its interior without the ghost cells: u[1:-1, 1:-1] is not contiguous
    ghosts = np.zeros((8, 6))
    ghosts[1:-1, 1:-1] = _data(2)
    block = HostDeviceArray(ghosts[1:-1, 1:-1])
    assert block.__cuda_array_interface__["strides"] == (48, 8)
    bridge, transport, _ = _bridge()
    assert bridge.publish("field", block, step=2)
    np.testing.assert_array_equal(transport.posted[0].block, _data(2))


def test_select_and_cast_run_on_the_device_and_only_their_result_leaves_it() -> None:
    array = ARRAY + ", select: [{start: 1, stop: 5}, {}], preprocess: {function: cast, params: {dtype: float32}}}"
    bridge, transport, copier = _bridge(array=array)
    assert bridge.publish("field", HostDeviceArray(_data(3)), step=3)
    (posted,) = transport.posted
    assert posted.block.dtype == np.float32
    np.testing.assert_array_equal(posted.block, _data(3)[1:5].astype(np.float32))
    assert copier.moved.bytes == 4 * 4 * 4, "4 x 4 float32 values, not the 6 x 4 float64 block"


def test_downsample_on_the_device() -> None:
    bridge, transport, copier = _bridge(array=ARRAY + ", preprocess: {function: downsample, params: {factor: 2}}}")
    assert bridge.publish("field", HostDeviceArray(_data(0)), step=0)
    np.testing.assert_array_equal(transport.posted[0].block, _data(0)[::2, ::2])
    assert copier.moved.bytes == 3 * 2 * 8


def test_stats_of_a_device_block_move_three_values() -> None:
    bridge, transport, copier = _bridge(array=ARRAY + ", preprocess: stats}")
    assert bridge.publish("field", HostDeviceArray(_data(1)), step=1)
    np.testing.assert_array_equal(transport.posted[0].block.reshape(4), [100.0, 123.0, _data(1).sum(), 24])
    assert (copier.moved.scalars, copier.moved.bytes, copier.moved.copies) == (3, 24, 0)


def test_a_user_function_gets_the_device_array() -> None:
    seen: list[type] = []

    def double(block: Any) -> Any:
        seen.append(type(block))
        return block.astype(np.float64)

    module = SimpleNamespace(double=double)
    sys.modules["_doreisa_device_user_fn"] = module  # type: ignore[assignment]
    try:
        bridge, transport, _ = _bridge(array=ARRAY + ", preprocess: '_doreisa_device_user_fn:double'}")
        assert bridge.publish("field", HostDeviceArray(_data(4)), step=4)
    finally:
        del sys.modules["_doreisa_device_user_fn"]
    assert seen == [HostDeviceArray]
    np.testing.assert_array_equal(transport.posted[0].block, _data(4))


def test_a_dlpack_device_block_takes_the_device_path() -> None:
    bridge, transport, copier = _bridge()
    assert bridge.publish("field", HostDLPackArray(_data(5)), step=5)
    np.testing.assert_array_equal(transport.posted[0].block, _data(5))
    assert copier.moved.copies == 1 and copier.wrapped == 1


class _CpuDLPack:
    """A host array that offers only DLPack (as a CPU PyTorch tensor does)."""

    def __init__(self, data: np.ndarray[Any, Any]) -> None:
        self._data = data

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self._data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)


def test_a_host_dlpack_array_is_read_as_numpy_without_the_copier() -> None:
    bridge, transport, copier = _bridge()
    assert bridge.publish("field", _CpuDLPack(_data(6)), step=6)
    np.testing.assert_array_equal(transport.posted[0].block, _data(6))
    assert copier.wrapped == 0 and copier.moved.copies == 0


def test_numpy_blocks_never_reach_the_device_path() -> None:
    block = _data(0)
    assert Devices(HostCopier()).block(block) is block  # numpy has __dlpack__ too: it is not asked
    bridge, transport, copier = _bridge()
    assert bridge.publish("field", block, step=0)
    np.testing.assert_array_equal(transport.posted[0].block, block)
    assert copier.wrapped == 0 and copier.moved.bytes == 0


class _Watched(HostDeviceArray):
    """Counts how often its interface is read."""

    reads = 0

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        type(self).reads += 1
        return super().__cuda_array_interface__


def test_unwanted_steps_never_look_at_a_device_block() -> None:
    bridge, transport, _ = _bridge("cadence: {every: 10}")
    block = _Watched(_data(0))
    assert bridge.publish("field", block, step=0)  # the first publish agrees on the layout
    reads = _Watched.reads
    assert not any(bridge.publish("field", block, step=s) for s in range(1, 10))
    assert _Watched.reads == reads, "the fast path does not describe the block"
    transport.done(("field", 0))
    assert bridge.publish("field", block, step=10)


# -- the checks -------------------------------------------------------------------------------


def test_a_device_block_of_the_wrong_dtype_is_refused_like_a_numpy_one() -> None:
    bridge, _, copier = _bridge()
    with pytest.raises(BlockMismatchError, match="block dtype is float32; the contract says float64"):
        bridge.publish("field", HostDeviceArray(_data(0, "float32")), step=0)
    assert copier.wrapped == 0, "refused from its interface alone"


def test_a_device_block_whose_shape_or_offset_changes_is_refused() -> None:
    bridge, transport, _ = _bridge()
    assert bridge.publish("field", HostDeviceArray(_data(0)), step=0)
    with pytest.raises(BlockMismatchError, match=r"step 1: block shape \(3, 4\) differs .* \(6, 4\)"):
        bridge.publish("field", HostDeviceArray(_data(1)[:3]), step=1)
    with pytest.raises(BlockMismatchError, match=r"step 2: offset \(1, 0\) differs from the first publish"):
        bridge.publish("field", HostDeviceArray(_data(2)), step=2, offset=(1, 0))
    with pytest.raises(BlockMismatchError, match="block is 1-D; the contract's array is 2-D"):
        bridge.publish("field", HostDeviceArray(_data(3).ravel()), step=3)
    assert len(transport.posted) == 1


def test_an_unreadable_interface_is_a_block_mismatch() -> None:
    class Broken:
        @property
        def __cuda_array_interface__(self) -> dict[str, Any]:
            return {"shape": (6, 4)}  # no typestr

    bridge, _, _ = _bridge()
    with pytest.raises(BlockMismatchError, match=r"Broken is in device memory, but its __cuda_array_interface__"):
        bridge.publish("field", Broken(), step=0)


def test_without_cupy_a_device_block_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    bridge, transport, _ = _bridge(copier=None)
    with pytest.raises(BlockMismatchError, match="block dtype is int64"):  # checked before CuPy is needed
        bridge.publish("field", HostDeviceArray(_data(0, "int64")), step=0)
    with pytest.raises(
        DeviceUnavailableError,
        match=r"block of type HostDeviceArray in device memory.*CuPy.*pip install 'doreisa\[gpu\]'",
    ):
        bridge.publish("field", HostDeviceArray(_data(1)), step=1)
    assert transport.posted == []
    assert bridge.publish("field", _data(2), step=2), "numpy blocks still go"


def test_cupy_copier_wraps_and_copies_with_cupy_calls() -> None:
    calls: list[str] = []

    class Got:
        def get(self, out: np.ndarray[Any, Any]) -> None:
            calls.append("get")
            out[...] = 7.0

    cupy = SimpleNamespace(
        asarray=lambda b: calls.append("asarray") or Got(),
        from_dlpack=lambda b: calls.append("from_dlpack") or Got(),
        get_array_module=lambda a: "cupy-module",
    )
    copier = CupyCopier(cupy)
    dst = np.zeros(3)
    copier.to_host(copier.wrap(HostDeviceArray(np.zeros(3))), dst)
    copier.wrap(HostDLPackArray(np.zeros(3)))
    assert calls == ["asarray", "get", "from_dlpack"]
    assert (dst == 7.0).all() and copier.module(dst) == "cupy-module" and copier.scalar(np.float64(2)) == 2.0


# -- monitors -----------------------------------------------------------------------------------


def test_a_monitor_on_a_device_block_moves_one_value_per_reduction() -> None:
    extra = "cadence: {every: 100}\nmonitors:\n  - {array: field, reductions: [max, mean, nonfinite]}"
    bridge, transport, copier = _bridge(extra)
    bridge.publish("field", HostDeviceArray(_data(0)), step=0)  # step 0 is copied: 192 bytes
    copied = copier.moved.bytes
    for step in range(1, 4):
        assert not bridge.publish("field", HostDeviceArray(_data(step)), step=step)
    bridge.close()
    assert copier.moved.copies == 1
    assert copier.moved.bytes - copied == 3 * 3 * 8, "3 steps x (max, sum, finite count) x 8 bytes"
    (batch,) = [m for m in transport.sent if isinstance(m, MonitorBatch)]
    assert [r.values for r in batch.records] == [
        {"max(field)": 23.0 + 100 * s, "mean(field)": 11.5 + 100 * s, "nonfinite(field)": 0.0} for s in range(4)
    ]


def test_a_monitor_region_is_cut_on_the_device() -> None:
    extra = "cadence: {never: true}\nmonitors:\n  - {array: field, reductions: [min], select: [{start: 2}, {start: 1}]}"
    bridge, transport, copier = _bridge(extra)
    assert not bridge.publish("field", HostDeviceArray(_data(1)), step=1)
    bridge.close()
    (batch,) = [m for m in transport.sent if isinstance(m, MonitorBatch)]
    assert batch.records[0].values == {"min(field)": float(_data(1)[2:, 1:].min())}
    assert (copier.moved.bytes, copier.moved.copies) == (8, 0)


def test_a_device_part_is_a_device_block() -> None:
    block = Devices(HostCopier()).block(HostDeviceArray(_data(0)))
    assert isinstance(block, DeviceBlock) and (block.shape, block.dtype, block.ndim) == ((6, 4), np.float64, 2)
    part = block[1:3, ::2]
    assert isinstance(part, DeviceBlock) and part.shape == (2, 2)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(part.array)


def test_a_host_dlpack_array_numpy_cannot_read_is_a_block_mismatch() -> None:
    class Opaque(_CpuDLPack):
        def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
            raise BufferError("no exportable buffer")

    bridge, _, _ = _bridge()
    with pytest.raises(BlockMismatchError, match=r"Opaque is in host memory, but numpy cannot read it"):
        bridge.publish("field", Opaque(_data(0)), step=0)

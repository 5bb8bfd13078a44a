"""Device blocks: a simulation's arrays in GPU memory, published in one device-to-host copy.

A block is a device array when it exposes ``__cuda_array_interface__`` (CuPy, Numba, PyTorch)
or DLPack with a device other than the CPU (``__dlpack_device__()[0] != 1``: CuPy, PyTorch,
JAX). Its shape and dtype are read from the interface, without importing any GPU library, so
the checks of a device block are those of a numpy one and raise the same errors. What reads
the device memory is a :class:`DeviceCopier`: :class:`CupyCopier` by default, imported at the
first device block that must be read; :class:`~doreisa.runtime.rank.hostdevice.HostCopier` in
tests, over host memory.

On a device block, the contract's ``select``, the preprocessing operator and the monitors'
reductions run on the device with the array's own module; then one copy moves what is left
straight into the ring slot, with no host array in between. A monitor moves one value per
reduction off the device, and ``stats`` four. A host array that offers only DLPack
(``__dlpack_device__()[0] == 1``) is taken as numpy, without a copy. A numpy block never
reaches this module beyond one ``isinstance``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from doreisa.errors import BlockMismatchError, DeviceUnavailableError
from doreisa.runtime.triggers import local_reductions

if TYPE_CHECKING:
    from doreisa.runtime.plan import MonitorPlan
    from doreisa.runtime.rank.arrays import BlockCopy, RankArray

#: DLPack's device type of host memory (``kDLCPU``); every other one is device memory to this module.
DLPACK_CPU = 1
#: What to do when no copier can read device memory.
GPU_EXTRA = "pip install 'doreisa[gpu]' (CuPy for CUDA 12)"


class CudaArray(Protocol):
    """An array in CUDA memory that describes itself (CuPy, Numba, PyTorch)."""

    @property
    def __cuda_array_interface__(self) -> Mapping[str, Any]: ...


class DLPackArray(Protocol):
    """An array that hands itself over through DLPack (CuPy, PyTorch, JAX; numpy too, on the CPU)."""

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __dlpack_device__(self) -> tuple[int, int]: ...


#: What ``Bridge.publish`` takes as a block.
Block = np.ndarray[Any, Any] | CudaArray | DLPackArray


class DeviceCopier(Protocol):
    """What the bridge needs to read device memory: CuPy's in a run, a host stand-in in tests.

    ``wrap`` sees the simulation's array; the other methods see what ``wrap`` returned, and
    what slicing it and the operators made of it (in the copier's own array type).
    """

    def wrap(self, block: Any, /) -> Any:
        """A zero-copy array of the copier's library over the block's memory."""
        ...

    def module(self, array: Any, /) -> Any:
        """The array's own module (``cupy``): ``isfinite`` and ``count_nonzero`` on the device."""
        ...

    def to_host(self, array: Any, dst: np.ndarray[Any, Any], /) -> None:
        """Copy ``array`` into ``dst`` (same shape and dtype, C-contiguous): one device-to-host copy."""
        ...

    def scalar(self, value: Any, /) -> float:
        """A 0-d device array as a Python float (one value leaves the device)."""
        ...


class CupyCopier:
    """Device memory read with CuPy: ``cupy.asarray`` or ``cupy.from_dlpack`` wrap, ``ndarray.get(out=)`` copies."""

    def __init__(self, cupy: Any) -> None:
        self._cupy = cupy

    def wrap(self, block: Any, /) -> Any:
        if _cuda_interface(block) is not None:
            return self._cupy.asarray(block)  # zero-copy; CuPy waits for the producer's stream (interface v3)
        return self._cupy.from_dlpack(block)

    def module(self, array: Any, /) -> Any:
        return self._cupy.get_array_module(array)

    def to_host(self, array: Any, dst: np.ndarray[Any, Any], /) -> None:
        # a non-contiguous part (a select, a downsample) is made contiguous on the device first
        array.get(out=dst)

    def scalar(self, value: Any, /) -> float:
        return float(value)


def cupy_copier(what: str = "a block") -> CupyCopier:
    """CuPy's copier, importing CuPy; ``what`` names the block that needs it, for the error.

    Raises
    ------
    DeviceUnavailableError
        When CuPy cannot be imported, naming the extra that installs it.
    """
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        raise DeviceUnavailableError(
            f"{what} in device memory was published, and doreisa reads device memory with CuPy, which cannot be "
            f"imported here ({exc}). Install it: {GPU_EXTRA}; or publish a host copy (a numpy array)"
        ) from exc
    return CupyCopier(cupy)


class Devices:
    """A bridge's view of device blocks: their detection, and the copier (given, or CuPy's when first needed)."""

    def __init__(self, copier: DeviceCopier | None = None) -> None:
        self._copier = copier

    def copier(self, block: Any = None) -> DeviceCopier:
        """The copier; CuPy's is made when ``block`` is the first device block to read."""
        if self._copier is None:
            self._copier = cupy_copier(f"a block of type {type(block).__name__}")
        return self._copier

    def block(self, block: Any) -> Any:
        """``block`` as the bridge reads it: a numpy array as it is, a device array as a :class:`DeviceBlock`,
        a host array offering DLPack as numpy (zero-copy); anything else as it is, for the checks to name."""
        if isinstance(block, np.ndarray):
            return block
        cai = _cuda_interface(block)
        if cai is not None:
            return DeviceBlock(block, *_described(block, cai), self)
        device = _dlpack_device(block)
        if device is None:
            return block
        if device == DLPACK_CPU:
            try:
                return np.from_dlpack(block)
            except (TypeError, ValueError, BufferError, RuntimeError) as exc:
                raise BlockMismatchError(
                    f"block of type {type(block).__name__} is in host memory, but numpy cannot read it through "
                    f"DLPack: {exc}"
                ) from None
        return DeviceBlock(block, *_described(block, None), self)


class DeviceBlock:
    """A block in device memory: its shape and dtype from its interface; wrapped by the copier when first read."""

    __slots__ = ("_array", "_devices", "dtype", "obj", "shape")

    def __init__(self, obj: Any, shape: tuple[int, ...], dtype: np.dtype[Any], devices: Devices) -> None:
        self.obj, self.shape, self.dtype, self._devices = obj, shape, dtype, devices
        self._array: Any = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def copier(self) -> DeviceCopier:
        return self._devices.copier(self.obj)

    @property
    def array(self) -> Any:
        """The block in the copier's array type (``cupy.ndarray``), over the same memory."""
        if self._array is None:
            self._array = self.copier.wrap(self.obj)
        return self._array

    def __getitem__(self, index: Any) -> DeviceBlock:
        """A part of the block, still on the device (a monitor's region)."""
        part = self.array[index]
        out = DeviceBlock(part, tuple(part.shape), np.dtype(part.dtype), self._devices)
        out._array = part
        return out

    def to_host(self, part: Any, dst: np.ndarray[Any, Any]) -> None:
        """Land ``part`` (what the operator made of this block) in the ring slot ``dst``."""
        if isinstance(part, np.ndarray):  # already on the host: an operator that reduced on the device (stats)
            dst[...] = part
        else:
            self.copier.to_host(part, dst)


def copied_part(array: RankArray, copy: BlockCopy, block: Any, rank: int) -> Any:
    """What is copied of ``block``: its selected part, the operator applied; on the device for a device block.

    Raises
    ------
    BlockMismatchError
        When the operator returns another shape or dtype than it planned.
    """
    data = block.array if type(block) is DeviceBlock else block
    part = data if copy.whole else data[copy.part.local]
    if array.operator is not None:
        part = array.operator.apply(part)
        if tuple(part.shape) != copy.shape or part.dtype != copy.dtype:
            raise BlockMismatchError(
                f"rank {rank}: preprocess {array.operator_name!r} of {array.name!r} returned "
                f"{part.dtype}{list(part.shape)}; expected {copy.dtype}{list(copy.shape)} "
                "(declare a changed dtype with params.dtype)"
            )
    return part


def monitor_reductions(monitor: MonitorPlan, part: Any) -> dict[str, float]:
    """This rank's contribution to ``monitor``; on the device for a device block, only the values leave it."""
    if type(part) is DeviceBlock:
        data, copier = part.array, part.copier
        return local_reductions(monitor, data, xp=copier.module(data), scalar=copier.scalar)
    return local_reductions(monitor, part)


def _cuda_interface(block: Any) -> Mapping[str, Any] | None:
    try:  # a property: PyTorch raises AttributeError on a CPU tensor
        cai = block.__cuda_array_interface__
    except AttributeError:
        return None
    return cai if isinstance(cai, Mapping) else None


def _dlpack_device(block: Any) -> int | None:
    if not hasattr(block, "__dlpack__"):
        return None
    try:
        device_type, _ = block.__dlpack_device__()
        return int(device_type)
    except (AttributeError, TypeError, ValueError):
        return None


def _described(block: Any, cai: Mapping[str, Any] | None) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype from ``__cuda_array_interface__``, or from the array API attributes of a DLPack array."""
    try:
        if cai is not None:
            return tuple(int(n) for n in cai["shape"]), np.dtype(cai["typestr"])
        return tuple(int(n) for n in block.shape), _as_numpy_dtype(block.dtype)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        protocol = "__cuda_array_interface__" if cai is not None else "DLPack and its shape and dtype"
        raise BlockMismatchError(
            f"block of type {type(block).__name__} is in device memory, but its {protocol} cannot be read: {exc!r}"
        ) from None


def _as_numpy_dtype(dtype: Any) -> np.dtype[Any]:
    try:
        return np.dtype(dtype)
    except TypeError:  # torch.float64 and the like: the name after the module
        return np.dtype(str(dtype).rpartition(".")[2])

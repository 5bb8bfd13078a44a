"""A stand-in for device memory over host memory: the device path of the bridge, tested without a GPU.

:class:`HostDeviceArray` exposes ``__cuda_array_interface__`` (and :class:`HostDLPackArray`
DLPack with a CUDA device) over a numpy array, refuses to become a numpy array implicitly, as
CuPy does, and counts in its :class:`Moved` what leaves it: the copies into a ring slot and
the values a reduction brings back. :class:`HostCopier` is the
:class:`~doreisa.runtime.rank.device.DeviceCopier` that reads it.

Examples
--------
>>> copier = HostCopier()  # doctest: +SKIP
>>> bridge = doreisa.Bridge(SingleProcessComm(), transport=transport, copier=copier)  # doctest: +SKIP
>>> bridge.publish("t", HostDeviceArray(block), step=0)  # doctest: +SKIP
>>> copier.moved.bytes  # what left the "device"  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: DLPack's device type of CUDA memory (``kDLCUDA``).
DLPACK_CUDA = 2


@dataclass
class Moved:
    """What left the stand-in device: bytes, copies into a slot, and values brought back one at a time."""

    bytes: int = 0
    copies: int = 0
    scalars: int = 0


class _HostDevice:
    """The array operations the bridge, the operators and the monitors use, kept on the 'device'."""

    def __init__(self, data: np.ndarray[Any, Any], moved: Moved | None = None) -> None:
        self.data = data
        self.moved = moved if moved is not None else Moved()

    def _like(self, data: Any) -> HostDeviceArray:
        return HostDeviceArray(np.asarray(data), self.moved)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("Implicit conversion to a NumPy array is not allowed (a device array, as in CuPy)")

    def __getitem__(self, index: Any) -> HostDeviceArray:
        return self._like(self.data[index])

    def astype(self, dtype: Any) -> HostDeviceArray:
        return self._like(self.data.astype(dtype))

    def min(self) -> HostDeviceArray:
        return self._like(self.data.min())

    def max(self) -> HostDeviceArray:
        return self._like(self.data.max())

    def sum(self, dtype: Any = None) -> HostDeviceArray:
        return self._like(self.data.sum(dtype=dtype))

    def __float__(self) -> float:
        if self.data.ndim:
            raise TypeError("only 0-d device arrays become a float")
        self.moved.bytes += self.data.nbytes
        self.moved.scalars += 1
        return float(self.data)


class HostDeviceArray(_HostDevice):
    """Host memory seen as CUDA memory, through ``__cuda_array_interface__`` (version 3)."""

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        data = self.data
        strides = None if data.flags.c_contiguous else data.strides
        return {
            "shape": data.shape,
            "typestr": data.dtype.str,
            "data": (data.ctypes.data, False),
            "strides": strides,
            "version": 3,
        }


class HostDLPackArray(_HostDevice):
    """Host memory seen as CUDA memory, through DLPack only (as JAX offers it)."""

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self.data.__dlpack__()

    def __dlpack_device__(self) -> tuple[int, int]:
        return (DLPACK_CUDA, 0)


class _Module:
    """The stand-in device's array module: what the monitors' reductions call."""

    @staticmethod
    def isfinite(array: _HostDevice) -> HostDeviceArray:
        return array._like(np.isfinite(array.data))

    @staticmethod
    def count_nonzero(array: _HostDevice) -> HostDeviceArray:
        return array._like(np.count_nonzero(array.data))


class HostCopier:
    """The :class:`~doreisa.runtime.rank.device.DeviceCopier` of the stand-in device: counts what it copies."""

    def __init__(self) -> None:
        self.moved = Moved()
        self.wrapped = 0

    def wrap(self, block: Any, /) -> HostDeviceArray:
        if not isinstance(block, _HostDevice):
            raise TypeError(f"HostCopier reads HostDeviceArray and HostDLPackArray, not {type(block).__name__}")
        self.wrapped += 1
        return HostDeviceArray(block.data, self.moved)

    def module(self, array: Any, /) -> _Module:
        return _Module()

    def to_host(self, array: Any, dst: np.ndarray[Any, Any], /) -> None:
        if not isinstance(array, _HostDevice):
            raise TypeError(f"to_host takes a device array, not {type(array).__name__}")
        if array.shape != dst.shape or array.dtype != dst.dtype:  # as cupy.ndarray.get(out=) refuses
            raise ValueError(f"{array.dtype}{list(array.shape)} cannot land in {dst.dtype}{list(dst.shape)}")
        dst[...] = array.data
        self.moved.bytes += dst.nbytes
        self.moved.copies += 1

    def scalar(self, value: Any, /) -> float:
        return float(value)

"""What the C library (``doreisa.h``, :mod:`doreisa.native`) calls in its embedded Python.

One :class:`NativeBridge` per rank wraps a :class:`~doreisa.runtime.rank.bridge.Bridge`. The C
side hands over the caller's buffer as a read-only memoryview (no copy: the bridge copies what
the contract wants, once) and keeps the fast path of unwanted steps itself, from the two numbers
:meth:`NativeBridge.publish` returns. Errors travel back as a code of ``doreisa.h`` and a message
(:func:`describe`), never as an abort.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from doreisa.errors import BlockMismatchError, DoreisaError, LayoutError, RuntimeUnavailableError
from doreisa.runtime.rank.bridge import Bridge

#: doreisa.h's ``doreisa_dtype`` codes
DTYPES = {
    1: np.dtype("float64"),
    2: np.dtype("float32"),
    3: np.dtype("int64"),
    4: np.dtype("int32"),
    5: np.dtype("int16"),
    6: np.dtype("int8"),
    7: np.dtype("uint64"),
    8: np.dtype("uint32"),
    9: np.dtype("uint16"),
    10: np.dtype("uint8"),
}


class ArgumentError(TypeError):
    """An argument the C caller got wrong (``DOREISA_ERR_ARGUMENT``); any other exception is a bug's."""


#: doreisa.h's ``doreisa_status`` codes, most specific class first
CODES: tuple[tuple[type[BaseException], int], ...] = (
    (LayoutError, -3),
    (BlockMismatchError, -2),
    (RuntimeUnavailableError, -4),
    (DoreisaError, -5),
    (ArgumentError, -1),
)
PYTHON_ERROR = -6
INT64_MAX = 2**63 - 1


def describe(exc: BaseException) -> tuple[int, str]:
    """The doreisa.h code and the message of an exception raised for a C caller."""
    code = next((code for cls, code in CODES if isinstance(exc, cls)), PYTHON_ERROR)
    text = str(exc) if code != PYTHON_ERROR else f"{type(exc).__name__}: {exc}"
    return code, text


class NativeBridge:
    """A :class:`Bridge` as the C API sees it: numbers and buffers in, tuples out."""

    def __init__(self, comm_f: int) -> None:
        from mpi4py import MPI

        self.bridge = Bridge(MPI.Intracomm(MPI.Comm.f2py(comm_f)))

    def publish(
        self,
        name: str,
        view: memoryview,
        dtype: int,
        shape: tuple[int, ...],
        strides: tuple[int, ...] | None,
        offset: tuple[int, ...] | None,
        step: int,
        time: float | None,
        last_seen: int,
        fast_calls: int,
    ) -> tuple[bool, int, int]:
        """Publish; return (copied, last step, first step that may be wanted) for the C fast path.

        ``last_seen`` is the last step the C side let pass without entering Python, and
        ``fast_calls`` how many calls it answered so: the order check and the counts stay exact.
        """
        bridge = self.bridge
        bridge.stats.calls += fast_calls
        run = bridge._arrays.get(name)  # the fast path's state: the C side keeps a copy
        if run is not None and last_seen > run.last_step:
            run.last_step = last_seen
        kind = DTYPES[dtype]
        steps = None if strides is None else tuple(s * kind.itemsize for s in strides)
        block = np.ndarray(shape, kind, buffer=view, strides=steps)  # the caller's memory, read-only: no copy
        copied = bridge.publish(name, block, step=step, time=time, offset=offset)
        run = bridge._arrays[name]  # publish raised if the array is unknown
        skip_below = min([run.skip_below, *(view.skip_below for view in run.views)])  # its views must skip too
        return copied, run.last_step, min(skip_below, INT64_MAX)

    def wants(self, name: str, step: int, time: float | None) -> bool:
        return self.bridge.wants(name, step, time)

    def feedback(self, key: str) -> tuple[bool, float]:
        """(found, value) of a steering value; a value that is not a number is a TypeError."""
        if key not in self.bridge.feedback:
            return False, 0.0
        value: Any = self.bridge.feedback[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ArgumentError(f"steering value {key!r} is {value!r}, not a number: the C API reads numbers only")
        return True, float(value)

    def close(self, fast_calls: int) -> tuple[int, int, int, int, int, int]:
        self.bridge.stats.calls += fast_calls
        s = self.bridge.close()
        return s["calls"], s["published"], s["bytes_copied"], s["skipped"], s["dropped"], s["not_selected"]

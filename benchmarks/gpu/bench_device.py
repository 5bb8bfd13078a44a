"""Publish of a device block vs ``cupy.asnumpy`` of it, 64 KiB to 64 MiB (issue #18).

Target: at 8 MiB and above, ``Bridge.publish`` of a CuPy block costs at most 1.2x
``cupy.asnumpy`` of the same block. Both end with the block's values in host memory:
``asnumpy`` in a new array, ``publish`` in the ring slot it reserved (here a staging area of
this process, so that the figure is publish's own cost: checks, bookkeeping and the one
device-to-host copy; under ``doreisa run`` the slot is in /dev/shm and a node actor takes it).

Each size is measured for a contiguous block and for the interior of a block with one ghost
cell on each side (``u[1:-1, 1:-1]``, as the heat example publishes it: not contiguous, so
both paths first make it contiguous on the device). Every call is timed alone, after the
device is idle; the figure is the median.

Needs CuPy and a CUDA device. Writes JSON (``--output``), and prints a table::

    python benchmarks/gpu/bench_device.py --output results/bench_device.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cupy as cp
import numpy as np

from doreisa.contract import parse_contract
from doreisa.runtime.rank.bridge import Bridge
from doreisa.runtime.rank.comm import SingleProcessComm
from doreisa.runtime.rank.inprocess import InProcessTransport

KIB, MIB = 1 << 10, 1 << 20
SIZES = [64 * KIB << i for i in range(11)]  # 64 KiB ... 64 MiB
COLS = 1024  # float64 columns: 8 KiB rows
TARGET_RATIO, TARGET_FROM = 1.2, 8 * MIB


class _Slot:
    """One preallocated slot, never copied out: what publish pays is the copy into it."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.buffer = np.zeros(shape, dtype)  # pages touched once, as a ring's are after its first lap

    def has_slot(self) -> bool:
        return True

    def reserve(self, step: int, time: float | None, tags: int = 0) -> np.ndarray[Any, Any]:
        return self.buffer

    def post(self) -> bool:
        return True

    def idle(self) -> bool:
        return True

    def pending(self) -> int:
        return 0


class SlotTransport(InProcessTransport):
    """The in-process transport, with a staging area that keeps no copy of what is posted."""

    def open(self, array: Any, copy: Any, backpressure: Any) -> Any:
        self.slot = _Slot(copy.shape, copy.dtype)
        return self.slot


def _contract(rows: int) -> str:
    # policy latest never waits for the analytics: every step is copied, none is held back
    return f"""
arrays:
  field: {{dtype: float64, shape: [{rows}, {COLS}], block: [{rows}, {COLS}]}}
cadence: {{every: 1}}
backpressure: {{policy: latest, max_in_flight: 4}}
"""


def _timed(fn: Any, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        cp.cuda.runtime.deviceSynchronize()
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def measure(nbytes: int, strided: bool, reps: int) -> dict[str, Any]:
    rows = nbytes // (8 * COLS)
    full = cp.random.default_rng(1).random((rows + 2, COLS + 2)) if strided else None
    block = full[1:-1, 1:-1] if full is not None else cp.random.default_rng(1).random((rows, COLS))
    transport = SlotTransport(parse_contract(_contract(rows)), node_id="bench")
    bridge = Bridge(SingleProcessComm(), transport=transport)
    step = 0

    def publish() -> None:
        nonlocal step
        assert bridge.publish("field", block, step=step), "every step is wanted"
        step += 1

    def asnumpy() -> None:
        cp.asnumpy(block)

    for _ in range(3):  # warm up: CuPy's kernels (a strided copy), the layout at the first publish
        publish()
        asnumpy()
    np.testing.assert_array_equal(transport.slot.buffer, cp.asnumpy(block))
    # interleaved, so that a drift of the machine hits both alike
    pub: list[float] = []
    ref: list[float] = []
    for _ in range(reps):
        pub += _timed(publish, 1)
        ref += _timed(asnumpy, 1)
    bridge.close()
    p, r = statistics.median(pub), statistics.median(ref)
    return {
        "bytes": nbytes,
        "strided": strided,
        "reps": reps,
        "publish_ms": p * 1e3,
        "asnumpy_ms": r * 1e3,
        "ratio": p / r,
        "publish_gbs": nbytes / p / 1e9,
        "asnumpy_gbs": nbytes / r / 1e9,
        "publish_min_ms": min(pub) * 1e3,
        "asnumpy_min_ms": min(ref) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--reps", type=int, default=30, help="timed calls per size and path")
    parser.add_argument("--quick", action="store_true", help="5 calls per size (a smoke run)")
    args = parser.parse_args()
    reps = 5 if args.quick else args.reps
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    rows = []
    for strided in (False, True):
        for nbytes in SIZES:
            row = measure(nbytes, strided, reps)
            rows.append(row)
            kind = "interior" if strided else "contiguous"
            print(
                f"{kind:10} {nbytes / MIB:8.3f} MiB  publish {row['publish_ms']:8.3f} ms"
                f"  asnumpy {row['asnumpy_ms']:8.3f} ms  ratio {row['ratio']:5.2f}",
                flush=True,
            )
    judged = [r for r in rows if r["bytes"] >= TARGET_FROM]
    worst = max(r["ratio"] for r in judged)
    result = {
        "benchmark": "publish of a device block vs cupy.asnumpy",
        "device": props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"]),
        "cupy": cp.__version__,
        "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
        "python": sys.version.split()[0],
        "host": platform.node(),
        "target": f"publish <= {TARGET_RATIO}x asnumpy at {TARGET_FROM // MIB} MiB and above",
        "worst_ratio_from_target_size": worst,
        "met": worst <= TARGET_RATIO,
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"worst ratio at >= {TARGET_FROM // MIB} MiB: {worst:.2f} (target {TARGET_RATIO}): {result['met']}")


if __name__ == "__main__":
    main()

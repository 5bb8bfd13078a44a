"""What a simulation rank pays for doreisa before its first step: import time and memory (issue #17).

Each figure comes from fresh interpreters, as a rank starts. The baseline imports ``numpy`` and
``mpi4py.MPI`` (a singleton MPI: no mpiexec) and stops. The rank does the same, then
``from doreisa import Bridge`` (timed), creates a Bridge from the ``Welcome`` a node actor sends
(the compiled plan; an in-process transport stands in for the node actor and its socket), and
publishes a few steps with a monitor and a trigger evaluated. Its max RSS minus the baseline's is
what doreisa costs a rank; a job pays it on every rank. No Ray: this runs before the other sections.

    .venv/bin/python benchmarks/rank_footprint.py     # the two figures alone, as JSON
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_common import Entry, judged

IMPORT_TARGET_MS = 100.0
RSS_TARGET_MB = 10.0
#: A contract that exercises the rank's whole start: a monitor, a trigger on it, a view.
CONTRACT = """
arrays:
  field: {dtype: float64, shape: [64, 64], block: [64, 64]}
  zoom: {of: field, select: [{start: 16, stop: 48}, {start: 16, stop: 48}], cadence: {never: true}}
cadence: {every: 2}
monitors: [{array: field, reductions: [max, mean]}]
triggers:
  - {name: hot, when: "max(field) > 5 and step > 3", action: {cadence: {every: 1}, arrays: [zoom]}}
"""
#: Peak RSS of this process image. Not getrusage's ru_maxrss: Linux keeps it across exec, so a child
#: started by a big parent would report the parent's size.
PEAK = "max(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) / 1024"
BASELINE = f"""
import json
import numpy, mpi4py.MPI
print(json.dumps({{"maxrss_mb": {PEAK}}}))
"""
RANK = """
import json, sys, time
started = time.perf_counter()
import numpy as np
from mpi4py import MPI
imported = time.perf_counter()
from doreisa import Bridge
bridge_imported = time.perf_counter()
import msgspec
from doreisa.runtime.protocol import Welcome
from doreisa.runtime.rank.inprocess import InProcessTransport
with open(sys.argv[1], "rb") as f:
    transport = InProcessTransport(msgspec.msgpack.decode(f.read(), type=Welcome))
bridge = Bridge(MPI.COMM_WORLD, transport=transport)
created = time.perf_counter()
block = np.zeros((64, 64))
for step in range(10):
    block[0, 0] = step
    if bridge.publish("field", block, step=step):
        transport.done(("field", step), ("zoom", step))
    transport.posted.clear()
bridge.close()
print(json.dumps({
    "maxrss_mb": PEAK,
    "numpy_mpi4py_ms": (imported - started) * 1e3,
    "import_ms": (bridge_imported - imported) * 1e3,
    "create_ms": (created - bridge_imported) * 1e3,
    "loaded": [m for m in ("pydantic", "yaml", "ray", "dask") if m in sys.modules],
}))
""".replace("PEAK", PEAK)


def _run(code: str, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def measure(reps: int) -> dict[str, Any]:
    """``reps`` baselines and ranks, interleaved; their medians and every sample."""
    import msgspec

    from doreisa.contract import parse_contract
    from doreisa.runtime.rank.inprocess import InProcessTransport

    welcome = InProcessTransport(parse_contract(CONTRACT), store_bytes=2 << 30).welcome
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "welcome.msgpack"
        path.write_bytes(msgspec.msgpack.encode(welcome))  # what the node actor's socket carries, unframed
        samples = [(_run(BASELINE), _run(RANK, str(path))) for _ in range(reps)]
    base = statistics.median(b["maxrss_mb"] for b, _ in samples)
    rank = {key: statistics.median(r[key] for _, r in samples) for key in ("maxrss_mb", "import_ms", "create_ms")}
    return {
        "reps": reps,
        "baseline_maxrss_mb": base,
        "rank": rank,
        "numpy_mpi4py_ms": statistics.median(r["numpy_mpi4py_ms"] for _, r in samples),
        "loaded": sorted({m for _, r in samples for m in r["loaded"]}),
        "samples": samples,
    }


def entries(quick: bool, raw: dict[str, Any]) -> list[Entry]:
    """``rank_import_ms`` and ``rank_rss_mb``, judged against the targets of issue #17."""
    out = raw["rank_footprint"] = measure(5 if quick else 15)
    rank = out["rank"]
    params = {
        "reps": out["reps"],
        "numpy_mpi4py_import_ms": round(out["numpy_mpi4py_ms"], 1),
        "bridge_create_ms": round(rank["create_ms"], 2),
        "rank_maxrss_mb": round(rank["maxrss_mb"], 1),
        "baseline_maxrss_mb": round(out["baseline_maxrss_mb"], 1),
        "loaded": out["loaded"],
    }
    imports = Entry(
        "rank_import_ms",
        rank["import_ms"],
        "ms",
        reference=IMPORT_TARGET_MS,
        target=f"<= {IMPORT_TARGET_MS:g} ms",
        params=params,
        notes="`from doreisa import Bridge` in a fresh rank that has imported numpy and mpi4py.MPI; median",
    )
    memory = Entry(
        "rank_rss_mb",
        rank["maxrss_mb"] - out["baseline_maxrss_mb"],
        "MB",
        reference=RSS_TARGET_MB,
        target=f"<= +{RSS_TARGET_MB:g} MB",
        params=dict(params),
        notes="max RSS of a rank (Bridge from a node actor's Welcome, 10 steps published, monitor and trigger) "
        "minus that of numpy + mpi4py.MPI alone; medians",
    )
    return [judged(imports, at_most=IMPORT_TARGET_MS), judged(memory, at_most=RSS_TARGET_MB)]


if __name__ == "__main__":
    result: dict[str, Any] = {}
    print(json.dumps([e.as_dict() for e in entries(True, result)], indent=1))

"""Shared pieces of the benchmark suite: result entries, statistics, /proc readers.

Nothing here imports ray: the CPU and memory readers work on ``/proc`` only, so they also
describe runs of the peers (other venvs, other processes).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Entry:
    """One figure of the report.

    ``reference`` is the value the figure is judged against: the target for an absolute
    metric, the peer's figure for a comparison. ``ratio`` is ``value / reference``.
    ``target`` says what "met" means, and ``met`` is None when the figure is missing.
    """

    metric: str
    value: float | None
    unit: str
    reference: float | None = None
    ratio: float | None = None
    params: dict[str, Any] = field(default_factory=dict[str, Any])
    notes: str = ""
    target: str = ""
    met: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        return asdict(self)


def judged(entry: Entry, *, at_most: float | None = None, ratio_at_most: float | None = None) -> Entry:
    """Fill ``ratio`` and ``met`` from a bound on the value or on the ratio."""
    if entry.value is not None and math.isnan(entry.value):
        entry.value = None
    if entry.value is not None and entry.reference:
        entry.ratio = entry.value / entry.reference
    if at_most is not None and entry.value is not None:
        entry.met = entry.value <= at_most
    if ratio_at_most is not None:
        entry.met = None if entry.ratio is None else entry.ratio <= ratio_at_most
    return entry


def pctl(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def med(values: Iterable[float]) -> float:
    """Median; NaN when empty."""
    data = list(values)
    return statistics.median(data) if data else math.nan


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _busy_ticks() -> int:
    fields = [int(x) for x in _read("/proc/stat").splitlines()[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4]  # minus idle and iowait


def proc_table() -> dict[int, tuple[int, int, str]]:
    """``{pid: (ppid, cpu ticks incl. reaped children, command line)}`` of readable processes."""
    out: dict[int, tuple[int, int, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = _read(f"/proc/{name}/stat")
            rest = stat[stat.rindex(")") + 2 :].split()
            ticks = sum(int(x) for x in rest[11:15])  # utime, stime, cutime, cstime
            cmd = _read(f"/proc/{name}/cmdline").replace("\0", " ").strip()
            out[int(name)] = (int(rest[1]), ticks, cmd)
        except (OSError, ValueError, IndexError):
            continue
    return out


def descendants(root: int, table: dict[int, tuple[int, int, str]]) -> set[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo, seen = [root], set[int]()
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


class CpuMeter:
    """CPU share used by processes *outside* this benchmark's process tree (the machine is shared).

    ``foreign = (machine busy time - this tree's CPU time) / (wall time x cores)``; a
    process of the tree that ends is still counted once its parent has reaped it.
    """

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._busy0 = _busy_ticks()
        self._mine0 = self._tree_ticks()

    @staticmethod
    def _tree_ticks() -> int:
        table = proc_table()
        return sum(table[p][1] for p in descendants(os.getpid(), table) if p in table)

    def foreign(self) -> float:
        """Foreign CPU share since creation, in [0, 1]."""
        wall = time.monotonic() - self._t0
        hz = os.sysconf("SC_CLK_TCK")
        busy = (_busy_ticks() - self._busy0) / hz
        mine = (self._tree_ticks() - self._mine0) / hz
        return max(0.0, busy - mine) / (wall * (os.cpu_count() or 1)) if wall > 0 else math.nan


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (0 if gone)."""
    try:
        for line in _read(f"/proc/{pid}/status").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def shm_mb(pid: int) -> float:
    """MiB of tmpfs pages allocated in the /dev/shm files ``pid`` holds open (Ray's object store
    file is one, unlinked; tmpfs keeps pages once touched, so this is a high-water mark)."""
    total, seen = 0, set[tuple[int, int]]()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0.0
    for fd in fds:
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if os.readlink(path).startswith("/dev/shm/"):
                st = os.stat(path)
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
        except OSError:
            continue
    return total / 2**20


def loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages."""
    return _read("/proc/loadavg").split()[:3]

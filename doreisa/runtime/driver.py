"""The analytics side: complete steps become Dask arrays, windows slide, analytics run.

No Ray import here: the driver receives complete steps as plain data whose blocks are Ray
object references (opaque to this module) and a Dask scheduler to run graphs with. Tests
can therefore drive it with numpy blocks and the synchronous scheduler.
"""

from __future__ import annotations

import collections
import csv
import logging
import math
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from doreisa.analytics import BoundAnalytic, windows_needed
from doreisa.contract import Contract

log = logging.getLogger("doreisa.driver")

Scheduler = Callable[..., Any]


@dataclass
class Failure:
    """An analytic call that raised or timed out."""

    analytic: str
    step: int
    error: str
    traceback: str

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        return {"analytic": self.analytic, "step": self.step, "error": self.error, "traceback": self.traceback}


class ResultSink:
    """Records results: ``results.csv`` (scalars inline, arrays as ``.npy`` files beside it)."""

    FIELDS = ("analytic", "step", "time", "value", "file")

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.values: dict[str, dict[int, Any]] = collections.defaultdict(dict)
        self._file = None
        self._writer: Any = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._file = (directory / "results.csv").open("w", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow(self.FIELDS)

    def record(self, analytic: str, step: int, time: float | None, value: Any) -> None:
        """Keep ``value`` in memory and write it out."""
        self.values[analytic][step] = value
        if self._writer is None:
            return
        scalar, path = _scalar(value), ""
        if scalar is None:
            assert self.directory is not None
            folder = self.directory / "arrays" / analytic
            folder.mkdir(parents=True, exist_ok=True)
            path = f"arrays/{analytic}/step_{step:08d}.npy"
            np.save(self.directory / path, np.asarray(value))
        self._writer.writerow(
            (analytic, step, "" if time is None else repr(time), "" if scalar is None else scalar, path)
        )
        assert self._file is not None
        self._file.flush()

    def close(self) -> None:
        """Close the CSV file."""
        if self._file is not None:
            self._file.close()


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool | int | float | str | np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        item = np.asarray(value).item()
        return repr(float(item)) if isinstance(item, float) else str(item)
    return None


@dataclass
class _Entry:
    step: int
    time: float | None
    array: da.Array


@dataclass
class DriverCounts:
    """What the driver did."""

    steps: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    calls: int = 0
    failed: int = 0


class AnalyticsDriver:
    """Turns complete steps into Dask arrays and runs the bound analytics on them.

    Parameters
    ----------
    contract : Contract
    bound : list of BoundAnalytic
        From :func:`doreisa.analytics.bind_analytics`.
    sink : ResultSink
    scheduler : callable
        A Dask ``get`` function (``ray.util.dask.ray_dask_get`` in a run), set only inside a
        scoped ``dask.config.set`` around each analytic.
    on_done : callable
        Receives the (array, step) pairs whose analytics are finished (backpressure credit).
    """

    def __init__(
        self,
        contract: Contract,
        bound: list[BoundAnalytic],
        *,
        sink: ResultSink,
        scheduler: Scheduler,
        on_done: Callable[[list[tuple[str, int]]], None] = lambda items: None,
    ) -> None:
        self.contract = contract
        self.bound = bound
        self.sink = sink
        self.scheduler = scheduler
        self.on_done = on_done
        self.failures: list[Failure] = []
        self.counts = DriverCounts()
        sizes = windows_needed(contract, bound)
        self.windows: dict[str, collections.deque[_Entry]] = {
            name: collections.deque(maxlen=n) for name, n in sizes.items()
        }
        self._readers: dict[str, list[BoundAnalytic]] = collections.defaultdict(list)
        for b in bound:
            for name in set(b.arrays):
                self._readers[name].append(b)

    def deliver(self, step_data: Mapping[str, Any]) -> None:
        """One complete step of one array: ``array, step, time, chunks, dtype, blocks{index: block}``."""
        name, step = step_data["array"], step_data["step"]
        self.windows[name].append(_Entry(step, step_data["time"], to_dask(step_data)))
        self.counts.steps[name] += 1
        for b in self._readers.get(name, []):
            if self._ready(b, step):
                self._run(b, step)
        self.on_done([(name, step)])

    def release(self) -> None:
        """Drop every step still held in a window (end of run)."""
        for window in self.windows.values():
            window.clear()

    def _ready(self, b: BoundAnalytic, step: int) -> bool:
        for name in set(b.arrays):
            window = self.windows[name]
            if len(window) < b.window or window[-1].step != step:
                return False
        return True

    def _run(self, b: BoundAnalytic, step: int) -> None:
        first = self.windows[b.arrays[0]]
        entries = list(first)[-b.window :]
        args = {name: self._window_of(name, b.window) for name in set(b.arrays)}
        steps, times = [e.step for e in entries], [e.time for e in entries]
        self.counts.calls += 1
        try:
            value = self._call(b, args, steps, times)
        except Exception as exc:  # an analytic's failure must not stop the others or the simulation
            self.counts.failed += 1
            failure = Failure(b.label, step, f"{type(exc).__name__}: {exc}", traceback.format_exc())
            self.failures.append(failure)
            log.error("analytic %s failed at step %d: %s", b.label, step, failure.error)
            return
        self.sink.record(b.label, step, times[-1], value)

    def _window_of(self, name: str, size: int) -> Any:
        arrays = [e.array for e in list(self.windows[name])[-size:]]
        return arrays if size > 1 else arrays[0]

    def _call(self, b: BoundAnalytic, args: dict[str, Any], steps: list[int], times: list[float | None]) -> Any:
        def work() -> Any:
            with dask.config.set(scheduler=self.scheduler):
                (value,) = dask.compute(b.call(args, steps=steps, times=times))
            return value

        limit = self.contract.timeouts.analytic
        if limit is None:
            return work()
        return _with_timeout(work, limit, f"{b.label} at step {steps[-1]}")


def _with_timeout(work: Callable[[], Any], limit: float, what: str) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"doreisa-analytic-{what}", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise TimeoutError(f"{what} ran longer than timeouts.analytic = {limit:g} s; abandoned")
    if "error" in box:
        raise box["error"]
    return box["value"]


def to_dask(step_data: Mapping[str, Any]) -> da.Array:
    """A Dask array whose chunks are the step's blocks (Ray object references in a run)."""
    chunks = tuple(tuple(c) for c in step_data["chunks"])
    name = f"doreisa-{step_data['array']}-{step_data['step']}-{id(step_data):x}"
    graph = {(name, *index): block for index, block in step_data["blocks"].items()}
    expected = math.prod(len(c) for c in chunks)
    assert len(graph) == expected, f"step {step_data['step']} has {len(graph)} of {expected} blocks"
    return da.Array(graph, name, chunks=chunks, dtype=np.dtype(step_data["dtype"]))

"""The analytics side: complete steps become Dask arrays, windows slide, analytics run.

No Ray import here: the driver receives complete steps (``CompleteStep`` records) whose blocks are Ray
object references (opaque to this module) and a Dask scheduler to run graphs with. Tests
can therefore drive it with numpy blocks and the synchronous scheduler.

Analytics get arrays over :class:`~doreisa.runtime.scheduling.graphs.Block` placeholders, named after
the array and its place in the window, so that an analytic builds the same graph at every
step; the scheduler gets the placeholders' blocks (``bindings``) and the Dask ``tokenize``
of what it computes (``signature``), with which it reuses the graph's cut from step to step.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import msgspec
import numpy as np
from dask.base import compute as dask_compute
from dask.base import tokenize
from dask.config import set as dask_config_set

from doreisa.analytics import BoundAnalytic, Feedback, windows_needed
from doreisa.contract import Contract
from doreisa.errors import ExpressionError
from doreisa.runtime.cluster.deadline import CallThread
from doreisa.runtime.cluster.results import ResultWriter
from doreisa.runtime.protocol import CompleteStep, Decision, Done
from doreisa.runtime.scheduling.graphs import bind, blocks_array, bound, placeholder_array
from doreisa.runtime.triggers import Transition, TriggerGates, TriggerMachine, transitions_decision

log = logging.getLogger("doreisa.driver")

Scheduler = Callable[..., Any]
#: ``(arrays, leaf_nodes, leaf_bytes, bindings) -> scheduler``: the Dask ``get`` for one computation.
#: The scheduler is called as ``get(dsk, keys, signature=...)``, ``signature`` being the
#: ``tokenize`` of the collections of an analytic's result (None for computes inside an analytic).
SchedulerFor = Callable[[tuple[str, ...], Mapping[Any, str], Mapping[Any, int], Mapping[Any, Any]], Scheduler]


@dataclass
class Failure:
    """An analytic call that raised or timed out; the same error again at later steps is counted here."""

    analytic: str
    step: int  # the first step it failed at
    error: str
    traceback: str
    count: int = 1
    last_step: int = -1

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        return {
            "analytic": self.analytic,
            "step": self.step,
            "error": self.error,
            "traceback": self.traceback,
            "count": self.count,
            "last_step": max(self.step, self.last_step),
        }


class Failures(list[Failure]):
    """Every failure once per analytic and kind of error, with how often it happened: an analytic that
    fails at every step of a long run is one entry (its first message and traceback), not one per step."""

    def add(self, analytic: str, step: int, error: str, trace: str) -> Failure:
        """Record a failure (``error``: ``"Kind: message"``); returns its entry (``count`` > 1: seen before)."""
        kind = error.partition(":")[0]
        for failure in self:
            if failure.analytic == analytic and failure.error.partition(":")[0] == kind:
                failure.count += 1
                failure.last_step = step
                return failure
        failure = Failure(analytic, step, error, trace)
        self.append(failure)
        return failure


@dataclass
class _Entry:
    step: int
    time: float | None
    chunks: tuple[tuple[int, ...], ...]
    dtype: np.dtype[Any]
    blocks: dict[tuple[int, ...], Any]
    parts: dict[tuple[int, ...], int]
    nodes: dict[str, str] = field(default_factory=dict[str, str])  # block reference id -> node holding it
    nbytes: dict[str, int] = field(default_factory=dict[str, int])

    def view(self, name: str, position: int) -> tuple[da.Array, dict[Any, Any]]:
        """The step as a Dask array over placeholders, and their bindings: ``position`` steps before the
        newest in the window; the same name at every step of the same chunks and dtype."""
        return placeholder_array(f"doreisa-{name}-{position}", self.chunks, self.dtype, self.blocks, self.parts)


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
    results : ResultWriter
    scheduler : callable
        A Dask ``get`` function (``ray.util.dask.ray_dask_get`` in a run), set only inside a
        scoped ``dask.config.set`` around each analytic; it gets graphs with their
        placeholders bound to the blocks.
    scheduler_for : callable, optional
        Instead of ``scheduler``, the Dask ``get`` of each computation (see :data:`SchedulerFor`).
    on_done : callable
        Receives a ``Done`` record: the (array, step) whose analytics are finished (backpressure credit), and
        the decisions taken on the way.
    """

    def __init__(
        self,
        contract: Contract,
        bound: list[BoundAnalytic],
        *,
        results: ResultWriter,
        scheduler: Scheduler,
        scheduler_for: SchedulerFor | None = None,
        on_done: Callable[[Done], None] = lambda done: None,
        on_action: Callable[[int, str, list[str], bool], None] = lambda step, label, triggers, once: None,
    ) -> None:
        self.contract = contract
        self.bound = bound
        self.results = results
        self.scheduler = scheduler
        self.scheduler_for = scheduler_for or (lambda arrays, nodes, nbytes, bindings: _binding(scheduler, bindings))
        self._local = threading.local()
        self.on_done = on_done
        self.on_action = on_action
        self.gates = TriggerGates(contract)
        self.failures = Failures()
        #: runs the analytic calls, each within timeouts.analytic
        self.runner = CallThread()
        self.counts = DriverCounts()
        sizes = windows_needed(contract, bound)
        # an analytic of several arrays may see one array a few steps ahead of another
        slack = {name for b in bound if len(set(b.arrays)) > 1 for name in b.arrays}
        extra = contract.backpressure.max_in_flight
        self.windows: dict[str, collections.deque[_Entry]] = {
            name: collections.deque(maxlen=n + (extra if name in slack else 0)) for name, n in sizes.items()
        }
        self._readers: dict[str, list[BoundAnalytic]] = collections.defaultdict(list)
        for b in bound:
            for name in set(b.arrays):
                self._readers[name].append(b)
        names = [t.name for t in contract.triggers if not contract.trigger_in_simulation(t.name)]
        self.triggers = TriggerMachine(contract, names)
        self.decisions: list[Decision] = []

    def deliver(self, complete: CompleteStep) -> None:
        """One complete step of one array: run the analytics and triggers that it makes ready."""
        name, step = complete.array, complete.step
        self.windows[name].append(_entry(complete))
        self.counts.steps[name] += 1
        feedback = Feedback(frozenset(self.contract.arrays))
        # The only change of dask's (process-wide) configuration, scoped to this call and made by this
        # thread alone; analytics threads choose their scheduler through a thread-local instead.
        with dask_config_set(scheduler=self._dispatch):
            for b in self._readers.get(name, []):
                if self.gates.let(b.label, complete.step, complete.tags, self.on_action) and self._ready(b, step):
                    self._run(b, step, feedback)
            transitions = self._evaluate_triggers(name, step, complete.time)
        decision = self._decide(step, transitions, feedback)
        self.on_done(Done(((name, step),), (decision,) if decision else ()))

    def _evaluate_triggers(self, name: str, step: int, time: float | None) -> list[Transition]:
        arrays = {a for _, a in self.triggers.reductions}
        if name not in arrays:
            return []
        at_step = {a: entries for a in arrays if (entries := self._entries(a, step, 1))}
        bindings: dict[Any, Any] = {}
        views = {a: _views(a, entries, bindings)[0] for a, entries in at_step.items()}
        wanted = {(f, a): _reduction(f, views[a]) for f, a in self.triggers.reductions if a in views}
        self._local.scheduler = self._scheduler(tuple(at_step), step, 1, bindings)
        try:
            (values,) = self._compute(wanted)
        except Exception as exc:  # a trigger that cannot be evaluated must not stop the analytics
            self.failures.add("triggers", step, f"{type(exc).__name__}: {exc}", traceback.format_exc())
            traceback.clear_frames(exc.__traceback__)
            return []
        finally:
            self._local.scheduler = None
        try:
            return self.triggers.update({k: float(v) for k, v in values.items()}, step=step, time=time)
        except ExpressionError as exc:
            self.failures.add("triggers", step, f"{type(exc).__name__}: {exc}", "")
            return []

    def _decide(self, step: int, transitions: list[Transition], feedback: Feedback) -> Decision | None:
        if not transitions and not feedback:
            return None
        deterministic = self.contract.feedback.mode == "deterministic"
        decision = transitions_decision(
            transitions,
            seq=len(self.decisions) + 1,
            step=step,
            source="trigger",
            apply_at=step + self.contract.feedback.lag if deterministic else None,
            cadence=feedback.cadence,
            steering=feedback.steering,
        )
        if not transitions:
            decision = msgspec.structs.replace(decision, source="feedback")
        elif feedback:
            decision = msgspec.structs.replace(decision, source=decision.source + "+feedback")
        self.decisions.append(decision)
        return decision

    def release(self) -> None:
        """Drop every step still held in a window, and the analytics' worker thread (end of run)."""
        for window in self.windows.values():
            window.clear()
        self.runner.close()

    def _entries(self, name: str, step: int, size: int) -> list[_Entry] | None:
        """The ``size`` steps of ``name`` ending at ``step``, if they are all here."""
        entries = [e for e in self.windows[name] if e.step <= step][-size:]
        return entries if len(entries) == size and entries[-1].step == step else None

    def _ready(self, b: BoundAnalytic, step: int) -> bool:
        # arrays complete independently: another array may already hold newer steps
        return all(self._entries(name, step, b.window) is not None for name in set(b.arrays))

    def _run(self, b: BoundAnalytic, step: int, feedback: Feedback) -> None:
        windows = {name: self._entries(name, step, b.window) or [] for name in set(b.arrays)}
        entries = windows[b.arrays[0]]
        named = b.analytic.named
        dims = {name: self.contract.arrays[name].dims is not None for name in windows}
        wrap = lambda name, array: self._named(name, array) if named is True or (named and dims[name]) else array  # noqa: E731
        bindings: dict[Any, Any] = {}
        args: dict[str, Any] = {}
        for name, ws in windows.items():
            arrays = [wrap(name, array) for array in _views(name, ws, bindings)]
            args[name] = arrays if b.window > 1 else arrays[0]
        steps, times = [e.step for e in entries], [e.time for e in entries]
        self.counts.calls += 1
        try:
            value = self._call(b, args, steps, times, feedback, bindings)
        except Exception as exc:  # an analytic's failure must not stop the others or the simulation
            self.counts.failed += 1
            failure = self.failures.add(b.label, step, f"{type(exc).__name__}: {exc}", traceback.format_exc())
            # what its frames held (the blocks' references) goes now, not when a reference cycle is collected
            traceback.clear_frames(exc.__traceback__)
            if failure.count == 1:  # once per analytic and error: the summary counts the others
                log.error("analytic %s failed at step %d: %s", b.label, step, failure.error)
            return
        self.results.record(b.label, step, times[-1], value)

    def _named(self, name: str, array: da.Array) -> Any:
        """``array`` as an ``xarray.DataArray`` with the contract's dims; coordinates are the global
        indices of the selected region (left out when a preprocess changed the shape)."""
        import xarray as xr

        spec = self.contract.arrays[name]
        assert spec.dims is not None, "checked when binding"
        dims = list(spec.dims)
        if array.ndim > len(dims):  # e.g. the 'stats' preprocess adds a dimension
            dims += [f"{name}_dim_{i}" for i in range(len(dims), array.ndim)]
        coords = {}
        if spec.preprocess is None or spec.preprocess.function == "cast":
            coords = {
                d: np.arange(start, stop, step) for d, (start, stop, step) in zip(dims, spec.region, strict=False)
            }
        return xr.DataArray(array, dims=dims, coords=coords, name=name)

    def _dispatch(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """The Dask ``get`` in force during :meth:`deliver`: this thread's analytic's scheduler."""
        scheduler = getattr(self._local, "scheduler", None)
        if scheduler is None:
            return self.scheduler(dsk, keys, **kwargs)
        return scheduler(dsk, keys, signature=getattr(self._local, "signature", None), **kwargs)

    def _compute(self, value: Any) -> Any:
        """``dask.compute(value)``, telling the scheduler what it computes (Dask's ``tokenize``).

        Without Dask's low-level optimisation: fusing each chunk's tasks into one saves Ray tasks
        to a scheduler that sends one per Dask task, not to one that runs a node's tasks in a
        single Ray task; and a fused task runs as a small graph of its own, several times the cost
        of a plain task (docs/performance.md). The scheduler culls what the keys do not need.
        """
        try:
            self._local.signature = tokenize(value)
        except Exception:  # e.g. tokenize.ensure-deterministic on an object Dask cannot hash: cut every time
            self._local.signature = None
        try:
            return dask_compute(value, optimize_graph=False)
        finally:
            self._local.signature = None

    def _scheduler(self, arrays: tuple[str, ...], step: int, size: int, bindings: Mapping[Any, Any]) -> Scheduler:
        nodes: dict[str, str] = {}
        nbytes: dict[str, int] = {}
        for name in set(arrays):
            for entry in self._entries(name, step, size) or []:
                nodes.update(entry.nodes)
                nbytes.update(entry.nbytes)
        return self.scheduler_for(arrays, nodes, nbytes, bindings)

    def _call(
        self,
        b: BoundAnalytic,
        args: dict[str, Any],
        steps: list[int],
        times: list[float | None],
        feedback: Feedback,
        bindings: Mapping[Any, Any],
    ) -> Any:
        scheduler = self._scheduler(b.arrays, steps[-1], b.window, bindings)

        def work() -> Any:
            self._local.scheduler = scheduler
            try:
                with bound(bindings):
                    call = b.call(args, steps=steps, times=times, feedback=feedback, output=self.results.directory)
                    (value,) = self._compute(call)
            finally:
                self._local.scheduler = None
            return value

        limit = self.contract.timeouts.analytic
        if limit is None:
            return work()
        return self.runner.run(work, limit, f"{b.label} at step {steps[-1]}")


def _views(name: str, entries: list[_Entry], bindings: dict[Any, Any]) -> list[da.Array]:
    """The steps of a window of ``name`` (oldest first) as placeholder arrays; their bindings go into ``bindings``."""
    arrays = []
    for position, entry in zip(range(len(entries) - 1, -1, -1), entries, strict=True):  # 0: the newest
        array, placed = entry.view(name, position)
        arrays.append(array)
        bindings.update(placed)
    return arrays


def _binding(scheduler: Scheduler, bindings: Mapping[Any, Any]) -> Scheduler:
    """``scheduler`` (which knows no placeholders) given graphs whose placeholders are bound."""

    def get(dsk: Any, keys: Any, *, signature: Any = None, **kwargs: Any) -> Any:
        return scheduler(bind(dsk, bindings), keys, **kwargs)

    return get


def _entry(step_data: CompleteStep) -> _Entry:
    chunks = tuple(tuple(c) for c in step_data.chunks)
    dtype = np.dtype(step_data.dtype)
    blocks = dict(step_data.blocks)
    expected = math.prod(len(c) for c in chunks)
    assert len(blocks) == expected, f"step {step_data.step} has {len(blocks)} of {expected} blocks"
    nodes: dict[str, str] = {}
    nbytes: dict[str, int] = {}
    where = step_data.nodes
    for index, block in blocks.items():
        if index in where and hasattr(block, "hex"):  # a Ray object reference (numpy blocks in tests)
            key = block.hex()
            nodes[key] = where[index]
            shape = [chunks[d][i] for d, i in enumerate(index)]
            nbytes[key] = nbytes.get(key, 0) + math.prod(shape) * dtype.itemsize  # an object of several blocks
    parts = dict(step_data.parts)
    return _Entry(step_data.step, step_data.time, chunks, dtype, blocks, parts, nodes, nbytes)


def to_dask(step_data: CompleteStep) -> da.Array:
    """A Dask array whose chunks are the step's blocks (Ray object references in a run).

    A block stored with others in one object (``parts``: its position there) is a task that
    takes it out of the object: it runs where the object is, without a copy.
    """
    name = f"doreisa-{step_data.array}-{step_data.step}-{id(step_data):x}"
    return blocks_array(name, step_data.chunks, step_data.dtype, step_data.blocks, step_data.parts)


def _reduction(name: str, x: Any) -> Any:
    """An expression's reduction of a Dask array (the names of ``contract.expressions.REDUCTIONS``)."""
    return (~da.isfinite(x)).sum() if name == "nonfinite" else getattr(da, name)(x)

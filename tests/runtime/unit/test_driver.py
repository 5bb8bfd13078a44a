"""The analytics driver with numpy blocks as 'refs' and the synchronous Dask scheduler (no Ray)."""

from __future__ import annotations

import csv
import gc
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import msgspec
import numpy as np
import pytest

from doreisa.analytics import Registry, bind_analytics, default_registry
from doreisa.contract import parse_contract
from doreisa.errors import AnalyticsError
from doreisa.runtime.cluster.driver import AnalyticsDriver, to_dask
from doreisa.runtime.cluster.results import ResultWriter
from doreisa.runtime.protocol import CompleteStep, Done
from doreisa.runtime.scheduling.graphs import Block, bind

RNG = np.random.default_rng(7)
DATA = {(name, step): RNG.normal(10.0, 3.0, size=(4, 3)) for name in ("a", "b") for step in range(6)}


class CountingScheduler:
    """The synchronous scheduler, counting how many graphs it runs (xarray's raise_if_dask_computes idea)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.fail:
            raise AssertionError("a graph was computed")
        return dask.get(dsk, keys, **kwargs)


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def out(tmp_path: Path) -> Iterator[ResultWriter]:
    sink = ResultWriter(tmp_path / "out", keep=True)
    yield sink
    sink.close()


def _contract(analytics: str, extra: str = "") -> str:
    return f"""
arrays:
  a: {{dtype: float64, shape: [4, 3]}}
  b: {{dtype: float64, shape: [4, 3]}}
analytics:
{analytics}
{extra}
"""


def _driver(text: str, registry: Registry, sink: ResultWriter, **kwargs: Any) -> AnalyticsDriver:
    contract = parse_contract(text)
    kwargs.setdefault("scheduler", dask.get)
    return AnalyticsDriver(contract, bind_analytics(contract, registry), results=sink, **kwargs)


def _step(name: str, step: int, time: float | None = None) -> CompleteStep:
    """One complete step as the head delivers it: two blocks along dim 0."""
    values = DATA[(name, step)]
    blocks = {(0, 0): values[:3], (1, 0): values[3:]}
    return CompleteStep(name, step, time, ((3, 1), (3,)), "<f8", blocks)


def _rows(sink: ResultWriter) -> list[dict[str, str]]:
    assert sink.directory is not None
    with (sink.directory / "results.csv").open() as f:
        return list(csv.DictReader(f))


def _thread(name: str) -> threading.Thread:
    (thread,) = [t for t in threading.enumerate() if t.name == name]
    return thread


# -- to_dask and the sink ---------------------------------------------------------------------


def test_to_dask_assembles_blocks() -> None:
    array = to_dask(_step("a", 0))
    assert isinstance(array, da.Array)
    assert array.chunks == ((3, 1), (3,))
    assert array.dtype == np.float64
    np.testing.assert_array_equal(array.compute(scheduler="sync"), DATA[("a", 0)])


def test_to_dask_takes_blocks_stored_together_out_of_their_object() -> None:
    step = _step("a", 0)
    top, bottom = step.blocks[(0, 0)], step.blocks[(1, 0)]
    stored = [bottom, top]  # one object of the step's two blocks, in the order the node stored them
    step = msgspec.structs.replace(step, blocks={(0, 0): stored, (1, 0): stored}, parts={(0, 0): 1, (1, 0): 0})
    array = to_dask(step)
    np.testing.assert_array_equal(array.compute(scheduler="sync"), DATA[("a", 0)])
    np.testing.assert_array_equal(array.blocks[1].compute(scheduler="sync"), bottom)


def test_sink_without_directory_keeps_values_in_memory() -> None:
    sink = ResultWriter(None)
    sink.record("m", 3, 0.5, np.float64(2.5))
    sink.record("h", 3, None, np.arange(3))
    assert sink.values["m"] == {3: 2.5}
    np.testing.assert_array_equal(sink.values["h"][3], [0, 1, 2])
    sink.close()


def test_sink_keeps_nothing_in_memory_when_it_writes(tmp_path: Path) -> None:
    sink = ResultWriter(tmp_path / "o")
    sink.record("mean", 3, 0.5, 1.25)
    sink.close()
    assert dict(sink.values) == {} and sink.count == 1
    assert (tmp_path / "o" / "results.csv").read_text().splitlines()[1] == "mean,3,0.5,1.25,"


def test_formats_without_npy_counts_unsaved_arrays(tmp_path: Path) -> None:
    sink = ResultWriter(tmp_path / "o", ("csv",))
    sink.record("hist", 0, None, np.arange(3))
    sink.close()
    assert sink.unsaved == 1 and not (tmp_path / "o" / "arrays").exists()


def test_sink_writes_csv_and_npy(out: ResultWriter) -> None:
    out.record("mean", 2, 0.25, np.float64(1.5))
    out.record("count", 2, None, np.int64(7))
    out.record("flag", 4, 1.0, np.bool_(True))
    out.record("hist", 4, 1.0, np.array([1, 2, 3]))
    assert _rows(out) == [
        {"analytic": "mean", "step": "2", "time": "0.25", "value": "1.5", "file": ""},
        {"analytic": "count", "step": "2", "time": "", "value": "7", "file": ""},
        {"analytic": "flag", "step": "4", "time": "1.0", "value": "True", "file": ""},
        {"analytic": "hist", "step": "4", "time": "1.0", "value": "", "file": "arrays/hist/step_00000004.npy"},
    ]
    assert out.directory is not None
    np.testing.assert_array_equal(np.load(out.directory / "arrays/hist/step_00000004.npy"), [1, 2, 3])


# -- running analytics --------------------------------------------------------------------------


def test_builtins_give_numpy_values(out: ResultWriter, registry: Registry) -> None:
    text = _contract(
        "  - {function: mean, arrays: [a]}\n  - {function: max, arrays: [a]}\n  - {function: std, arrays: [b]}"
    )
    driver = _driver(text, default_registry, out)
    for step in range(3):
        driver.deliver(_step("a", step, time=step * 0.5))
        driver.deliver(_step("b", step, time=step * 0.5))
    assert driver.failures == []
    for step in range(3):
        assert out.values["mean"][step] == pytest.approx(DATA[("a", step)].mean())
        assert out.values["max"][step] == DATA[("a", step)].max()
        assert out.values["std"][step] == pytest.approx(DATA[("b", step)].std())
    rows = _rows(out)
    assert [(r["analytic"], r["step"], r["time"]) for r in rows[:3]] == [
        ("mean", "0", "0.0"),
        ("max", "0", "0.0"),
        ("std", "0", "0.0"),
    ]
    assert float(rows[0]["value"]) == pytest.approx(DATA[("a", 0)].mean())
    assert (driver.counts.calls, driver.counts.failed, dict(driver.counts.steps)) == (9, 0, {"a": 3, "b": 3})


def test_window_of_two_passes_oldest_first(out: ResultWriter, registry: Registry) -> None:
    seen: list[tuple[list[int], list[float | None], int]] = []

    @registry.analytic("change", window=2)
    def change(x: list[da.Array], *, steps: list[int], times: list[float | None], step: int) -> da.Array:
        seen.append((steps, times, step))
        return x[1] - x[0]

    driver = _driver(_contract("  - {function: change, arrays: [a]}"), registry, out)
    for step in range(4):
        driver.deliver(_step("a", step, time=0.1 * step))
    assert seen == [([0, 1], [0.0, 0.1], 1), ([1, 2], [0.1, 0.2], 2), ([2, 3], [0.2, 0.30000000000000004], 3)]
    assert sorted(out.values["change"]) == [1, 2, 3]
    for step in (1, 2, 3):
        np.testing.assert_allclose(out.values["change"][step], DATA[("a", step)] - DATA[("a", step - 1)])
    assert [r["file"] for r in _rows(out)] == [f"arrays/change/step_0000000{s}.npy" for s in (1, 2, 3)]
    assert out.directory is not None
    np.testing.assert_allclose(
        np.load(out.directory / "arrays/change/step_00000002.npy"), DATA[("a", 2)] - DATA[("a", 1)]
    )


def test_analytic_on_two_arrays_waits_for_both(out: ResultWriter, registry: Registry) -> None:
    @registry.analytic("dot")
    def dot(x: da.Array, y: da.Array) -> da.Array:
        return (x * y).sum()

    done: list[tuple[str, int]] = []
    driver = _driver(
        _contract("  - {function: dot, arrays: [a, b]}"), registry, out, on_done=lambda d: done.extend(d.items)
    )
    driver.deliver(_step("a", 0))
    assert out.values["dot"] == {}
    driver.deliver(_step("b", 0))
    driver.deliver(_step("b", 1))
    assert list(out.values["dot"]) == [0]
    driver.deliver(_step("a", 1))
    assert out.values["dot"][0] == pytest.approx((DATA[("a", 0)] * DATA[("b", 0)]).sum())
    assert out.values["dot"][1] == pytest.approx((DATA[("a", 1)] * DATA[("b", 1)]).sum())
    assert done == [("a", 0), ("b", 0), ("b", 1), ("a", 1)]


def test_two_arrays_out_of_lockstep(out: ResultWriter, registry: Registry) -> None:
    @registry.analytic("dot")
    def dot(x: da.Array, y: da.Array) -> da.Array:
        return (x * y).sum()

    driver = _driver(_contract("  - {function: dot, arrays: [a, b]}"), registry, out)
    for name, step in [("a", 0), ("a", 1), ("b", 0), ("b", 1)]:
        driver.deliver(_step(name, step))
    assert sorted(out.values["dot"]) == [0, 1]


def test_failing_analytic_is_recorded_and_others_run(out: ResultWriter, registry: Registry) -> None:
    @registry.analytic("boom")
    def boom(x: da.Array, *, step: int) -> float:
        if step == 1:
            return 1 / 0
        return float(step)

    @registry.analytic("total")
    def total(x: da.Array) -> da.Array:
        return x.sum()

    driver = _driver(_contract("  - {function: boom, arrays: [a]}\n  - {function: total, arrays: [a]}"), registry, out)
    for step in range(3):
        driver.deliver(_step("a", step))
    (failure,) = driver.failures
    assert (failure.analytic, failure.step, failure.error) == ("boom", 1, "ZeroDivisionError: division by zero")
    assert "in boom" in failure.traceback
    assert "return 1 / 0" in failure.traceback
    assert failure.as_dict()["analytic"] == "boom"
    assert out.values["boom"] == {0: 0.0, 2: 2.0}
    assert sorted(out.values["total"]) == [0, 1, 2]
    assert (driver.counts.calls, driver.counts.failed) == (6, 1)


class _Held:
    """Stands for what a failed call's frames hold: the blocks' references (the objects stay in Ray's store)."""


@pytest.mark.parametrize("cycle", [False, True], ids=["plain", "exception-kept-in-a-local"])
def test_a_failed_call_keeps_nothing_its_frames_held_alive(out: ResultWriter, registry: Registry, cycle: bool) -> None:
    """The traceback of a failure refers to the frames it went through, which hold the step's blocks; kept in a
    reference cycle (the exception in a frame's local: the call thread's, or a library's), they waited for
    Python's cyclic collector, and the blocks' objects stayed in Ray's store after the run (seen in the F5
    in-transit test). Now freed at once, with or without a timeout (the call thread)."""
    held: list[weakref.ref[_Held]] = []

    @registry.analytic("boom")
    def boom(x: da.Array, *, step: int) -> float:
        blocks = _Held()
        held.append(weakref.ref(blocks))
        try:
            raise RuntimeError(f"failing with {blocks!r} in hand")
        except RuntimeError as exc:
            kept = exc if cycle else None  # a reference cycle: exc -> its traceback -> this frame -> kept
            assert kept is exc or not cycle
            raise

    extra = "" if cycle else "timeouts: {analytic: 60}"
    driver = _driver(_contract("  - {function: boom, arrays: [a]}", extra), registry, out)
    gc.disable()  # only reference counting frees: what a cycle holds stays
    try:
        driver.deliver(_step("a", 0))
        assert [ref() for ref in held] == [None]
    finally:
        gc.enable()
    assert [f.step for f in driver.failures] == [0]


def test_analytic_timeout_abandons_a_slow_call(out: ResultWriter, registry: Registry) -> None:
    release = threading.Event()

    @registry.analytic("slow")
    def slow(x: da.Array, *, step: int) -> da.Array:
        if step == 0:
            release.wait(10)
        return x.max()

    @registry.analytic("total")
    def total(x: da.Array) -> da.Array:
        return x.sum()

    # the limit holds for every call: long enough that the quick ones never reach it on a loaded machine
    text = _contract(
        "  - {function: slow, arrays: [a]}\n  - {function: total, arrays: [a]}", "timeouts: {analytic: 1.5}"
    )
    driver = _driver(text, registry, out)
    start = time.monotonic()
    driver.deliver(_step("a", 0))
    assert 1.5 <= time.monotonic() - start < 10
    (abandoned,) = driver.runner.abandoned  # before it is released and ends
    assert abandoned.is_alive() and abandoned.name == "doreisa-analytic-1"
    try:
        (failure,) = driver.failures
        assert (failure.analytic, failure.step) == ("slow", 0)
        assert failure.error == "TimeoutError: slow at step 0 ran longer than timeouts.analytic = 1.5 s; abandoned"
        assert out.values["total"][0] == pytest.approx(DATA[("a", 0)].sum())
        driver.deliver(_step("a", 1))  # later calls run normally
        assert out.values["slow"] == {1: DATA[("a", 1)].max()}
    finally:
        release.set()
        abandoned.join(5)


def test_abandoned_analytic_does_not_leak_the_scheduler(out: ResultWriter, registry: Registry) -> None:
    release = threading.Event()

    @registry.analytic("slow")
    def slow(x: da.Array, *, step: int) -> da.Array:
        if step == 0:
            release.wait(10)
        else:  # the abandoned call of step 0 ends while this one runs
            release.set()
            for thread in driver.runner.abandoned:  # (it may already have ended)
                thread.join(5)
        return x.max()

    scheduler = CountingScheduler()
    text = _contract("  - {function: slow, arrays: [a]}", "timeouts: {analytic: 2}")
    driver = _driver(text, registry, out, scheduler=scheduler)
    assert dask.config.get("scheduler", None) is None
    try:
        driver.deliver(_step("a", 0))
        driver.deliver(_step("a", 1))
        assert sorted(out.values["slow"]) == [1]
        assert dask.config.get("scheduler", None) is None
    finally:
        release.set()
        dask.config.config.pop("scheduler", None)


def test_on_done_after_each_delivery(out: ResultWriter, registry: Registry) -> None:
    calls: list[tuple[list[tuple[str, int]], int]] = []

    def on_done(done: Done) -> None:
        calls.append((list(done.items), len(out.values["mean"])))

    driver = _driver(_contract("  - {function: mean, arrays: [a]}"), default_registry, out, on_done=on_done)
    for step in range(2):
        driver.deliver(_step("a", step))
        driver.deliver(_step("b", step))
    # credit is given once the analytics of that delivery are recorded
    assert calls == [([("a", 0)], 1), ([("b", 0)], 1), ([("a", 1)], 2), ([("b", 1)], 2)]


def test_release_empties_windows(out: ResultWriter, registry: Registry) -> None:
    driver = _driver(_contract("  - {function: time_derivative, arrays: [a]}"), default_registry, out)
    driver.deliver(_step("a", 0, time=0.0))
    driver.deliver(_step("a", 1, time=0.5))
    assert out.values["time_derivative"][1] == pytest.approx((DATA[("a", 1)] - DATA[("a", 0)]).mean() / 0.5)
    driver.deliver(_step("b", 0))
    driver.deliver(_step("b", 1))
    assert {name: (len(w), w.maxlen) for name, w in driver.windows.items()} == {"a": (2, 2), "b": (1, 1)}
    driver.release()
    assert {name: len(w) for name, w in driver.windows.items()} == {"a": 0, "b": 0}


# -- laziness -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mean", "min", "max", "sum", "std", "histogram"])
def test_builtins_do_not_compute(name: str) -> None:
    x = to_dask(_step("a", 0))
    with dask.config.set(scheduler=CountingScheduler(fail=True)):
        result = default_registry.get(name).fn(x)
    assert isinstance(getattr(result, "data", result), da.Array)  # histogram: an xarray.DataArray over dask


def test_driver_computes_once_per_analytic_call(out: ResultWriter) -> None:
    scheduler = CountingScheduler()
    text = _contract(
        "  - {function: mean, arrays: [a]}\n  - {function: histogram, arrays: [a], params: {lo: 0, hi: 20}}"
    )
    driver = _driver(text, default_registry, out, scheduler=scheduler)
    for step in range(3):
        driver.deliver(_step("a", step))
    assert scheduler.calls == 6
    expected, _ = np.histogram(DATA[("a", 2)], bins=10, range=(0, 20))
    np.testing.assert_array_equal(out.values["histogram"][2], expected)


def test_counting_scheduler_sees_an_eager_analytic(out: ResultWriter, registry: Registry) -> None:
    @registry.analytic("eager")
    def eager(x: da.Array) -> da.Array:
        scale = float(x.max().compute())  # a compute inside the analytic: what laziness forbids
        return x.sum() / scale

    scheduler = CountingScheduler()
    driver = _driver(_contract("  - {function: eager, arrays: [a]}"), registry, out, scheduler=scheduler)
    driver.deliver(_step("a", 0))
    assert scheduler.calls == 2
    assert out.values["eager"][0] == pytest.approx(DATA[("a", 0)].sum() / DATA[("a", 0)].max())


def test_named_analytic_gets_dims_and_region_coordinates(registry: Registry) -> None:
    import xarray as xr

    seen = {}

    @registry.analytic("labelled", named=True)
    def labelled(a: Any) -> Any:
        seen["a"] = a
        return a.sel(y=slice(4, 6)).sum()

    text = """
arrays:
  a: {dtype: float64, shape: [8, 6], dims: [y, x], select: {y: {start: 2, step: 2}}}
analytics:
  - function: labelled
    arrays: [a]
"""
    sink = ResultWriter(None)
    contract = parse_contract(text)
    driver = AnalyticsDriver(contract, bind_analytics(contract, registry), results=sink, scheduler=dask.get)
    full = np.arange(48.0).reshape(8, 6)
    region = full[2::2]  # rows 2, 4, 6 as one chunk
    driver.deliver(CompleteStep("a", 0, None, ((3,), (6,)), "float64", {(0, 0): region}))
    assert isinstance(seen["a"], xr.DataArray) and seen["a"].dims == ("y", "x")
    assert list(seen["a"].coords["y"].values) == [2, 4, 6]
    assert sink.values["labelled"][0] == full[[4, 6]].sum()


def test_named_analytic_needs_dims(registry: Registry) -> None:
    @registry.analytic("labelled", named=True)
    def labelled(a: Any) -> Any:
        return a

    contract = parse_contract(
        "arrays:\n  a: {dtype: float64, shape: [4]}\nanalytics:\n  - {function: labelled, arrays: [a]}\n"
    )
    with pytest.raises(AnalyticsError, match=r"named=True but arrays \['a'\] have no dims"):
        bind_analytics(contract, registry)


def test_named_auto_wraps_only_the_arrays_with_dims(registry: Registry) -> None:
    import xarray as xr

    seen: dict[str, Any] = {}

    @registry.analytic("both", named="auto")
    def both(a: Any, b: Any) -> Any:
        seen.update(a=a, b=b)
        return a.sum() + b.sum()

    text = """
arrays:
  a: {dtype: float64, shape: [4], dims: [x]}
  b: {dtype: float64, shape: [4]}
analytics:
  - {function: both, arrays: [a, b]}
"""
    sink = ResultWriter(None)
    contract = parse_contract(text)
    driver = AnalyticsDriver(contract, bind_analytics(contract, registry), results=sink, scheduler=dask.get)
    for name in ("a", "b"):
        driver.deliver(CompleteStep(name, 0, None, ((4,),), "float64", {(0,): np.arange(4.0)}))
    assert isinstance(seen["a"], xr.DataArray) and seen["a"].dims == ("x",)
    assert isinstance(seen["b"], da.Array)
    assert sink.values["both"][0] == 12.0


# -- the same graph at every step -----------------------------------------------------------------


class RecordingSchedulerFor:
    """A ``scheduler_for`` that records what each computation is told, and runs it synchronously."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], Any, dict[Any, Any]]] = []

    def __call__(self, arrays: tuple[str, ...], nodes: Any, nbytes: Any, bindings: Any) -> Any:
        def get(dsk: Any, keys: Any, *, signature: Any = None, **kwargs: Any) -> Any:
            self.calls.append((arrays, signature, dict(bindings)))
            return dask.get(bind(dsk, bindings), keys, **kwargs)

        return get


def test_an_analytic_tells_the_scheduler_the_same_signature_at_every_step(out: ResultWriter) -> None:
    recorder = RecordingSchedulerFor()
    text = _contract("  - {function: mean, arrays: [a]}\n  - {function: time_derivative, arrays: [a]}")
    driver = _driver(text, default_registry, out, scheduler_for=recorder)
    for step in range(4):
        driver.deliver(_step("a", step, time=float(step)))
    signatures = [signature for _, signature, _ in recorder.calls]
    mean, derivative = signatures[0], signatures[2]  # step 0: mean; step 1: mean, then the window of 2
    assert signatures == [mean, mean, derivative, mean, derivative, mean, derivative]
    assert mean != derivative
    assert out.values["time_derivative"][3] == pytest.approx((DATA[("a", 3)] - DATA[("a", 2)]).mean())
    assert out.values["mean"][3] == pytest.approx(DATA[("a", 3)].mean())


def test_a_window_binds_each_position_to_its_step(out: ResultWriter) -> None:
    recorder = RecordingSchedulerFor()
    driver = _driver(
        _contract("  - {function: time_derivative, arrays: [a]}"), default_registry, out, scheduler_for=recorder
    )
    for step in range(3):
        driver.deliver(_step("a", step, time=float(step)))
    (_, _, first), (_, _, second) = recorder.calls
    assert first.keys() == second.keys(), "the same placeholders at steps 1 and 2..."
    blocks = {p.key: value for p, value in second.items() if isinstance(p, Block)}
    assert len({key[0] for key in blocks}) == 2, "... one array per position in the window..."
    newest = {key: block for key, block in blocks.items() if key[0].startswith("doreisa-a-0-")}
    oldest = {key: block for key, block in blocks.items() if key[0].startswith("doreisa-a-1-")}
    assert np.concatenate([newest[k] for k in sorted(newest)]).tolist() == DATA[("a", 2)].tolist()
    assert np.concatenate([oldest[k] for k in sorted(oldest)]).tolist() == DATA[("a", 1)].tolist()


def test_only_the_analytics_result_carries_a_signature(out: ResultWriter, registry: Registry) -> None:
    @registry.analytic("eager")
    def eager(x: da.Array) -> da.Array:
        scale = float(x.max().compute())  # computed inside the analytic: nothing to reuse it by
        return x.sum() / scale

    recorder = RecordingSchedulerFor()
    driver = _driver(_contract("  - {function: eager, arrays: [a]}"), registry, out, scheduler_for=recorder)
    driver.deliver(_step("a", 0))
    (_, inner, _), (_, final, _) = recorder.calls
    assert inner is None and final is not None
    assert out.values["eager"][0] == pytest.approx(DATA[("a", 0)].sum() / DATA[("a", 0)].max())


def test_a_result_dask_cannot_hash_is_computed_without_a_signature(registry: Registry) -> None:
    @registry.analytic("tagged")
    def tagged(x: da.Array) -> dict[str, Any]:
        return {"total": x.sum(), "lock": threading.Lock()}  # a lock cannot be pickled, so not hashed

    recorder = RecordingSchedulerFor()
    sink = ResultWriter(None)
    driver = _driver(_contract("  - {function: tagged, arrays: [a]}"), registry, sink, scheduler_for=recorder)
    with dask.config.set({"tokenize.ensure-deterministic": True}):
        driver.deliver(_step("a", 0))
    assert not driver.failures
    assert sink.values["tagged"][0]["total"] == pytest.approx(DATA[("a", 0)].sum())
    assert [signature for _, signature, _ in recorder.calls] == [None]

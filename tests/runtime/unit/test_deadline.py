"""Analytic calls with a deadline: one worker thread, abandoned when a call overruns, replaced for the next."""

from __future__ import annotations

import contextlib
import gc
import threading
import weakref

import pytest

from doreisa.runtime.cluster.deadline import CallThread


def test_calls_run_in_one_thread_and_return_or_raise() -> None:
    runner = CallThread()
    threads = {runner.run(lambda: threading.current_thread().name, 30, "a") for _ in range(3)}
    assert threads == {"doreisa-analytic-1"}
    with pytest.raises(ZeroDivisionError):
        runner.run(lambda: 1 / 0, 30, "b")
    assert runner.run(lambda: 7, 30, "c") == 7  # a call that raised leaves the thread serving
    runner.close()


class _Held:
    """What a failed call's frames hold (an analytic's: the blocks' references)."""


def test_a_call_that_raises_leaves_no_reference_cycle_holding_its_frames() -> None:
    held: list[weakref.ref[_Held]] = []

    def work() -> None:
        blocks = _Held()
        held.append(weakref.ref(blocks))
        raise ValueError(repr(blocks))

    runner = CallThread()
    gc.disable()  # only reference counting frees: what a cycle holds stays
    try:
        with contextlib.suppress(ValueError):
            runner.run(work, 30, "w")
        assert held[0]() is None, "the error, its traceback and the call's frames are freed at once"
    finally:
        gc.enable()
        runner.close()


def test_a_call_over_its_deadline_is_abandoned_and_the_next_one_runs() -> None:
    runner = CallThread()
    release = threading.Event()
    with pytest.raises(TimeoutError, match=r"stuck at step 3 ran longer than timeouts.analytic = 0.2 s; abandoned"):
        runner.run(lambda: release.wait(30), 0.2, "stuck at step 3")
    (stuck,) = runner.abandoned
    assert stuck.is_alive() and stuck.daemon  # never holds the process at exit
    assert runner.run(lambda: threading.current_thread().name, 30, "next") == "doreisa-analytic-2"
    release.set()
    stuck.join(5)
    assert not stuck.is_alive(), "an abandoned thread ends once its call returns"
    runner.close()


def test_close_ends_the_idle_thread() -> None:
    runner = CallThread()
    runner.run(lambda: None, 30, "a")
    thread = runner.thread
    assert thread is not None
    runner.close()
    thread.join(5)
    assert not thread.is_alive()
    assert runner.run(lambda: 1, 30, "after") == 1  # a later call starts a new thread
    runner.close()

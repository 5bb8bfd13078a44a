"""Analytic calls with a deadline: run in one long-lived thread, abandoned when they overrun.

A Python thread cannot be stopped from outside. So the driver hands each call to a worker
thread and waits at most the deadline; a call that overruns keeps its thread, which is
abandoned (a daemon: it never holds the process at exit), and the next call gets a new one.
The driver, and every other analytic, go on. One thread serves call after call: starting a
thread per call would cost the driver more than a small analytic does.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class _Call:
    __slots__ = ("done", "error", "value", "work")

    def __init__(self, work: Callable[[], Any]) -> None:
        self.work = work
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.work()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


class CallThread:
    """Runs calls one at a time in a worker thread, each with a deadline (see the module)."""

    def __init__(self, name: str = "doreisa-analytic") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Call | None] | None = None
        self.thread: threading.Thread | None = None
        #: threads left running an overdue call (each ends when its call returns, if it ever does)
        self.abandoned: list[threading.Thread] = []

    def run(self, work: Callable[[], Any], limit: float, what: str) -> Any:
        """``work()``, or ``TimeoutError`` naming ``what`` once it has run ``limit`` seconds (it is abandoned)."""
        if self._jobs is None or self.thread is None:
            self._jobs = queue.SimpleQueue()
            name = f"{self._name}-{len(self.abandoned) + 1}"
            self.thread = threading.Thread(target=_serve, args=(self._jobs,), name=name, daemon=True)
            self.thread.start()
        call = _Call(work)
        self._jobs.put(call)
        if not call.done.wait(limit):
            self._jobs.put(None)  # it ends after its call, if that ever returns
            self.abandoned.append(self.thread)
            self._jobs, self.thread = None, None  # the next call starts a new thread
            raise TimeoutError(f"{what} ran longer than timeouts.analytic = {limit:g} s; abandoned")
        error, call.error = call.error, None  # the traceback holds this frame: no cycle through ``call``
        if error is not None:
            try:
                raise error
            finally:
                del error  # nor through this local
        return call.value

    def close(self) -> None:
        """Let the worker thread end (it is idle: calls run one at a time)."""
        if self._jobs is not None:
            self._jobs.put(None)
        self._jobs, self.thread = None, None


def _serve(jobs: queue.SimpleQueue[_Call | None]) -> None:
    while (call := jobs.get()) is not None:
        call.run()

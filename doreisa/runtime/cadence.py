"""Which steps of an array are wanted: the cadence, evaluated the same way on every rank.

Pure logic, no Ray, no MPI. Every rank sees the same steps and simulation times, so every
rank takes the same decisions without talking to the others.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doreisa.contract import Cadence
    from doreisa.runtime.plan import CadencePlan

_TIME_EPS = 1e-9


class ArrayCadence:
    """The cadence of one array. ``wanted(step, time)`` is idempotent for a given step."""

    def __init__(self, cadence: CadencePlan | Cadence) -> None:
        self.cadence = cadence
        self._next_time: float | None = None
        self._last: tuple[int, bool] | None = None
        self._rephase = False

    def set_cadence(self, cadence: CadencePlan | Cadence) -> None:
        """Follow ``cadence`` from the next decision on (feedback, triggers)."""
        if cadence != self.cadence:
            self.cadence = cadence
            self._next_time = None
            self._last = None
            self._rephase = True  # a time cadence keeps its phase: next multiple of T from now on

    def wanted(self, step: int, time: float | None) -> bool:
        """Is ``step`` (at simulation ``time``) on the cadence?"""
        if time is None and self.cadence.by_time:
            return False  # not decided: the same step may still come with its time
        last = self._last
        if last is not None and last[0] == step:
            return last[1]
        decision = self._decide(step, time)
        self._last = (step, decision)
        return decision

    def next_wanted(self, step: int) -> int | None:
        """The first step after ``step`` that a step-count cadence wants (``None``: never again).

        Only for ``every`` cadences (a time cadence depends on times not seen yet).
        """
        c = self.cadence
        if c.never:
            return None
        assert c.every is not None, "only step-count cadences can tell in advance"
        start = int(c.start)
        nxt = start if step < start else start + ((step - start) // c.every + 1) * c.every
        return nxt if c.stop is None or nxt <= c.stop else None

    def _decide(self, step: int, time: float | None) -> bool:
        c = self.cadence
        if c.never:
            return False
        if c.every is not None:
            return step >= c.start and (c.stop is None or step <= c.stop) and (step - int(c.start)) % c.every == 0
        if time is None:
            return False
        period = c.every_time
        assert period is not None, "Cadence validates one of every/every_time"
        tol = _TIME_EPS * max(1.0, abs(period))
        if time < c.start - tol or (c.stop is not None and time > c.stop + tol):
            return False
        if self._next_time is None and self._rephase:
            self._rephase = False
            self._next_time = c.start + math.ceil((time - c.start - tol) / period) * period
        if self._next_time is not None and time < self._next_time - tol:
            return False
        self._next_time = c.start + (math.floor((time - c.start + tol) / period) + 1) * period
        return True

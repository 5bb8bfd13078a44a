"""Triggers, cadence decisions and monitors: pure logic shared by the ranks and the analytics.

No Ray, no Dask, no MPI. A :class:`~doreisa.runtime.protocol.Decision` is what every rank
applies at the same step, so that every rank keeps the same cadence state: ``triggers``
activates or releases triggers, ``cadence`` replaces the base cadence of the named arrays (a
feedback request), ``steering`` updates the values the simulation reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from doreisa.contract.expressions import NoHistory, Past, Reduction, Values
from doreisa.runtime.plan import CadencePlan, MonitorPlan, RankPlan
from doreisa.runtime.protocol import CadenceChange, Decision

if TYPE_CHECKING:
    from doreisa.contract import Contract, Monitor


@dataclass(frozen=True)
class Transition:
    """A trigger switching on (``active``) or off at ``step``, and the values that made it."""

    name: str
    active: bool
    step: int
    values: dict[str, float]


class TriggerMachine:
    """Hysteresis of a set of triggers: ``when`` switches on, ``until`` (else ``not when``) off.

    It also keeps the history that ``prev``, ``delta`` and ``rate`` read: for each reduction
    they name, its last two evaluations (the same on every rank, which all see the same values).
    """

    def __init__(self, contract: RankPlan | Contract, names: list[str]) -> None:
        self._exprs = {n: contract.trigger_expressions[n] for n in names}
        self.active = dict.fromkeys(names, False)
        self._remembered = frozenset(
            r for w, u in self._exprs.values() for r in w.history | (u.history if u else set())
        )
        self._latest: dict[Reduction, Past] = {}
        self._before: dict[Reduction, Past] = {}

    @property
    def reductions(self) -> frozenset[tuple[str, str]]:
        """Every (reduction, array) these triggers read."""
        out: set[tuple[str, str]] = set()
        for when, until in self._exprs.values():
            out |= when.reductions | (until.reductions if until else frozenset())
        return frozenset(out)

    def update(
        self, values: Values, *, step: int, time: float | None, fresh: Iterable[Reduction] | None = None
    ) -> list[Transition]:
        """Evaluate every trigger whose inputs are all in ``values``; return the switches.

        ``fresh``: the reductions of ``values`` computed at ``step`` (default: all); only they
        enter the history. A trigger reading the history of a reduction seen once is not evaluated.
        """
        self._remember(values, step, time, values.keys() if fresh is None else fresh)
        out: list[Transition] = []
        for name, (when, until) in self._exprs.items():
            expr = until if (self.active[name] and until is not None) else when
            if not expr.reductions <= values.keys():
                continue
            try:
                holds = bool(expr.evaluate(values, step=step, time=time, previous=self._before, observed=self._latest))
            except NoHistory:
                continue
            switch = (not self.active[name] and holds) or (
                self.active[name] and (holds if until is not None else not holds)
            )
            if switch:
                self.active[name] = not self.active[name]
                used = {f"{f}({a})": float(values[(f, a)]) for f, a in sorted(expr.reductions)}
                used |= {f"prev({f}({a}))": self._before[(f, a)].value for f, a in sorted(expr.history)}
                out.append(Transition(name, self.active[name], step, used))
        return out

    def _remember(self, values: Values, step: int, time: float | None, fresh: Iterable[Reduction]) -> None:
        for key in self._remembered.intersection(fresh):
            latest = self._latest.get(key)
            if latest is not None and latest.step < step:
                self._before[key] = latest
            self._latest[key] = Past(float(values[key]), step, time)


def transitions_decision(transitions: list[Transition], *, seq: int, step: int, source: str, **fields: Any) -> Decision:
    """A decision that applies ``transitions`` (``fields``: the other fields of :class:`Decision`)."""
    values: dict[str, float] = {}
    for t in transitions:
        values.update(t.values)
    names = ",".join(t.name for t in transitions)
    triggers = {t.name: t.active for t in transitions}
    return Decision(seq, step, f"{source}:{names}", triggers=triggers, values=values, **fields)


class CadenceState:
    """The effective cadence of every array: base (or feedback override) under active triggers (on a rank)."""

    def __init__(self, plan: RankPlan) -> None:
        self._plan = plan
        self.base: dict[str, CadencePlan] = {name: plan.cadence_of(name) for name in plan.arrays}
        self.active: dict[str, bool] = {t.name: False for t in plan.triggers}
        self.steering: dict[str, Any] = {}

    def effective(self, array: str) -> CadencePlan:
        """The cadence ``array`` follows now."""
        best = None
        for trig in self._plan.triggers:
            arrays = trig.action.arrays
            applies = self.active[trig.name] and trig.action.cadence is not None and (arrays is None or array in arrays)
            if applies and (best is None or trig.priority > best.priority):
                best = trig
        return best.action.cadence if best is not None and best.action.cadence is not None else self.base[array]

    def apply(self, decision: Decision) -> list[CadenceChange]:
        """Apply a decision; return the arrays whose cadence changed, with old and new cadence."""
        before = {name: self.effective(name) for name in self.base}
        for name, active in decision.triggers.items():
            self.active[name] = bool(active)
        for name, cadence in decision.cadence.items():
            self.base[name] = msgspec.convert(cadence, CadencePlan)  # validated where it was decided
        self.steering.update(decision.steering)
        changes = []
        for name, old in before.items():
            new = self.effective(name)
            if new != old:
                changes.append(CadenceChange(name, old.plain(), new.plain()))
        return changes


IDENTITY = {"max": -np.inf, "min": np.inf, "sum": 0.0}


def local_reductions(
    monitor: MonitorPlan | Monitor, part: Any, *, xp: Any = np, scalar: Callable[[Any], float] = float
) -> dict[str, float]:
    """This rank's contribution: max/min/sum and the element count (``part`` None: nothing selected).

    ``part`` is a numpy array, or a device array with its module ``xp`` (``cupy``): then the
    reductions run on the device and ``scalar`` brings each value back, one number at a time.
    """
    if part is None or part.size == 0:
        return {"max": IDENTITY["max"], "min": IDENTITY["min"], "sum": 0.0, "count": 0.0, "nonfinite": 0.0}
    out = {"count": float(part.size)}
    needs = set(monitor.reductions)
    if "nonfinite" in needs:  # integers are always finite
        finite = scalar(xp.count_nonzero(xp.isfinite(part))) if part.dtype.kind in "fc" else part.size
        out["nonfinite"] = float(part.size - finite)
    if "max" in needs:
        out["max"] = scalar(part.max())
    if "min" in needs:
        out["min"] = scalar(part.min())
    if needs & {"sum", "mean"}:
        out["sum"] = scalar(part.sum(dtype=np.float64))
    return out


def combine_reductions(monitor: MonitorPlan | Monitor, parts: list[dict[str, float]]) -> dict[tuple[str, str], float]:
    """Combine every rank's contribution into the monitor's values."""
    out: dict[tuple[str, str], float] = {}
    count = sum(p["count"] for p in parts)
    for red in monitor.reductions:
        if red in ("max", "min"):  # NaN anywhere is NaN, as numpy says for one rank (Python's max would skip it)
            values = [p.get(red, IDENTITY[red]) for p in parts]
            value = float("nan") if any(v != v for v in values) else (max if red == "max" else min)(values)
        elif red in ("sum", "nonfinite"):
            value = sum(p.get(red, 0.0) for p in parts)
        else:
            value = sum(p.get("sum", 0.0) for p in parts) / count if count else float("nan")
        out[(red, monitor.array)] = value
    return out


class TriggerGates:
    """The analytics that a trigger's ``action.analytics`` owns: may one run on a step?

    The ranks tag each block with the triggers active at its step (one bit per trigger of the
    contract, :attr:`~doreisa.runtime.protocol.CompleteStep.tags`), so the answer is the
    simulation's own view of the trigger, wherever the trigger is evaluated.
    """

    def __init__(self, contract: Contract) -> None:
        #: label -> (the trigger's bit, its name, once) for each trigger that owns the analytic
        self._gates = {
            label: [(contract.triggers.index(t), t.name, t.action.once) for t in triggers]
            for label, triggers in contract.gated.items()
        }
        self._was_active: dict[tuple[str, str], bool] = {}

    def let(self, label: str, step: int, tags: int, record: Callable[[int, str, list[str], bool], None]) -> bool:
        """True if analytic ``label`` runs at ``step``: always, unless triggers own it; then while one is
        active, or with ``once`` on the first step after it fired. Each such run is ``record``-ed."""
        gates = self._gates.get(label)
        if not gates:
            return True
        by: list[str] = []
        once = True
        for bit, trigger, only_once in gates:
            active = bool(tags >> bit & 1)
            fired = active and not self._was_active.get((label, trigger), False)
            self._was_active[label, trigger] = active
            if fired or (active and not only_once):
                by.append(trigger)
                once = once and only_once
        if by:
            record(step, label, by, once)
        return bool(by)

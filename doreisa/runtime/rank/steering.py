"""The rank side of the feedback channel: decisions applied by every rank at the same step.

Asynchronous mode: rank 0 queues the decisions it receives and, every ``sync_every`` steps,
broadcasts them; every rank applies them at that step. Deterministic mode: a decision taken
on step t carries ``apply_at = t + lag``; before step s every rank waits until the analytics
have finished every step t <= s - lag it handed over, then applies what is due. Monitors and
the triggers that only read monitors run here, on every rank alike, with no round trip.
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import msgspec

from doreisa.errors import ExpressionError
from doreisa.runtime.cadence import ArrayCadence
from doreisa.runtime.layout import local_part
from doreisa.runtime.plan import RankPlan
from doreisa.runtime.protocol import Applied, Decision, MonitorBatch, MonitorValues, RankMessage, TriggerFailed
from doreisa.runtime.rank.comm import Communicator
from doreisa.runtime.rank.device import monitor_reductions
from doreisa.runtime.triggers import (
    CadenceState,
    TriggerMachine,
    combine_reductions,
    transitions_decision,
)

log = logging.getLogger("doreisa.bridge")

#: Rank 0 sends the monitors' values in batches: when this many steps are buffered, when the
#: oldest is this old (seconds, checked at each monitored step), and at ``close()``. One message
#: per step cost rank 0 an encoding and a system call, and the node and head actors a report.
MONITOR_BATCH, MONITOR_FLUSH_S = 64, 0.1
#: Rank 0 logs the first steps with NaN or Inf of each array (``finite: true``); summary.json counts them all.
NONFINITE_LOGGED = 10


class RankFeedback:
    """Cadence state, decisions and monitors of one rank."""

    def __init__(
        self,
        rules: RankPlan,
        comm: Communicator,
        schedules: Mapping[str, ArrayCadence],
        *,
        report: Callable[[RankMessage], None],
        wait: Callable[[Callable[[], bool], float, str], None],
    ) -> None:
        #: the contract as this rank applies it (its compiled plan)
        self.rules = rules
        self._comm = comm
        self._rank = comm.Get_rank()
        self._schedules = schedules
        self._report = report
        self._wait = wait
        self.plan = CadenceState(rules)
        self.steering: Mapping[str, Any] = MappingProxyType(self.plan.steering)
        self.active = rules.uses_feedback
        self.deterministic = rules.feedback.mode == "deterministic"
        self.deterministic_wait = self.deterministic
        self._queue: list[Decision] = []
        self._awaiting: set[tuple[str, int]] = set()
        self._step = -1
        self._first_step: int | None = None
        in_sim = [t.name for t in rules.triggers if rules.trigger_in_simulation(t.name)]
        reads_nothing = {n for n in in_sim if not TriggerMachine(rules, [n]).reductions}
        # triggers on step/time only are evaluated at every step; the others when their monitors run
        self._step_triggers = TriggerMachine(rules, sorted(reads_nothing))
        self._sim_triggers = TriggerMachine(rules, [n for n in in_sim if n not in reads_nothing])
        self._monitors = {name: [m for m in rules.monitors if m.array == name] for name in rules.arrays}
        self._idle = not (self.active or rules.triggers or rules.monitors)
        self._sim_seq = 0
        self.values: dict[tuple[str, str], float] = {}
        self._monitored: list[MonitorValues] = []  # rank 0: the monitors' values not sent yet
        self._trigger_failed: TriggerFailed | None = None  # the first failure, counting the steps since
        self._monitored_since = 0.0
        self._nonfinite_logged: dict[str, int] = {}
        #: the active triggers, one bit per trigger of the contract: what the blocks of this step carry
        self.tags = 0

    # -- steps ---------------------------------------------------------------------------

    @property
    def step(self) -> int:
        """The last step begun."""
        return self._step

    def fixed_cadence(self, name: str) -> bool:
        """True when nothing can change which steps of ``name`` are wanted and no monitor reads them.

        Then the bridge may skip the array's unwanted steps without looking at them.
        """
        return self._idle and not self._monitors[name]

    def begin_step(self, step: int, time: float | None = None) -> None:
        """Called once per step, before any decision about it, on every rank alike."""
        if step <= self._step:
            return
        self._step = step
        if self._first_step is None:
            self._first_step = step
        if self._idle:  # nothing can change the cadence: the unwanted-step path stays a few attribute reads
            return
        if self._step_triggers.active:
            self._evaluate(self._step_triggers, step, time)
        local = [d for d in self._queue if d.local] if self._queue else []
        if local:
            self._queue = [d for d in self._queue if not d.local]
            for decision in local:
                self._apply(decision, step)
        if not self.active:
            return
        if self.deterministic:
            self._begin_deterministic(step)
        elif (step - self._first_step) % self.rules.feedback.sync_every == 0:
            batch = self._queue if self._rank == 0 else None
            batch = self._comm.bcast(batch, root=0)
            if self._rank == 0:
                self._queue = []
            for decision in batch or []:
                self._apply(decision, step)

    def _begin_deterministic(self, step: int) -> None:
        lag = self.rules.feedback.lag
        if not self.deterministic_wait:
            return
        self._wait(
            lambda: not any(t + lag <= step for _, t in self._awaiting),
            self.rules.timeouts.block,
            f"the analytics' decisions for the steps before {step} (feedback: deterministic, lag {lag})",
        )
        due = sorted((d for d in self._queue if _apply_at(d) <= step), key=lambda d: d.seq)
        if due:
            self._queue = [d for d in self._queue if _apply_at(d) > step]
            for decision in due:
                self._apply(decision, step)

    def handed_over(self, name: str, step: int) -> None:
        """A wanted step of ``name`` went to the analytics: its decision is awaited (deterministic)."""
        if self.active and self.deterministic:
            self._awaiting.add((name, step))

    def on_done(self, items: Sequence[tuple[str, int]], decisions: Sequence[Decision]) -> None:
        """The analytics finished these (array, step) and took these decisions."""
        for name, step in items:
            self._awaiting.discard((name, step))
        if decisions and (self.deterministic or self._rank == 0):
            self._queue.extend(decisions)

    def give_up(self) -> None:
        """The analytics are gone: stop waiting for decisions (collectives go on, so no rank hangs)."""
        self._awaiting.clear()
        self.deterministic_wait = False

    def _apply(self, decision: Decision, step: int) -> None:
        changes = self.plan.apply(decision)
        self.tags = sum(1 << i for i, t in enumerate(self.rules.triggers) if self.plan.active[t.name])
        for change in changes:
            self._schedules[change.array].set_cadence(self.plan.effective(change.array))
        if self._rank == 0:
            self._report(Applied(self._rank, step, decision, tuple(changes)))

    # -- monitors ------------------------------------------------------------------------

    def monitor(
        self,
        name: str,
        blocks: Sequence[Any],
        boxes: Sequence[tuple[tuple[int, ...], tuple[int, ...]]],
        step: int,
        time: float | None,
    ) -> None:
        """Reduce this rank's blocks (numpy, or device blocks: reduced on the device) for the monitors of
        ``name`` due at ``step`` (collective)."""
        if not self._monitors[name]:
            return
        monitors = [m for m in self._monitors[name] if step % m.every == 0]
        if not monitors:
            return
        spec = self.rules.arrays[name]
        local = []
        for mon in monitors:
            region = tuple(sl.bounds(n) for sl, n in zip(mon.select, spec.shape, strict=True)) if mon.select else None
            parts = blocks if region is None else [_cut(b, box, region) for b, box in zip(blocks, boxes, strict=True)]
            local.append([monitor_reductions(mon, part) for part in parts])  # on the device for a device block
        gathered = self._comm.allgather(local)
        values: dict[tuple[str, str], float] = {}
        for i, mon in enumerate(monitors):
            values.update(combine_reductions(mon, [part for g in gathered for part in g[i]]))
        self.values.update(values)
        if self._rank == 0:
            for (reduction, array), value in values.items():
                if reduction == "nonfinite" and value:
                    self._log_nonfinite(array, step, int(value))
            now = _time.monotonic()
            if not self._monitored:
                self._monitored_since = now
            named = {f"{f}({a})": v for (f, a), v in values.items()}
            self._monitored.append(MonitorValues(step, time, named))
            if len(self._monitored) >= MONITOR_BATCH or now - self._monitored_since >= MONITOR_FLUSH_S:
                self.flush_monitors()
        self._evaluate(self._sim_triggers, step, time, fresh=values)

    def _log_nonfinite(self, array: str, step: int, count: int) -> None:
        logged = self._nonfinite_logged[array] = self._nonfinite_logged.get(array, 0) + 1
        if logged <= NONFINITE_LOGGED:
            more = "; later steps with any are counted in summary.json only" if logged == NONFINITE_LOGGED else ""
            log.warning("array %r step %d: %d non-finite values (NaN or Inf)%s", array, step, count, more)

    def flush_monitors(self) -> None:
        """Send the monitors' values buffered by rank 0 (one ``monitor`` event for several steps)."""
        if self._monitored:
            self._report(MonitorBatch(self._rank, tuple(self._monitored)))
            self._monitored = []

    def finish(self) -> None:
        """At ``close()``: what rank 0 has not reported yet (monitors' values, how often triggers failed)."""
        self.flush_monitors()
        failed = self._trigger_failed
        if failed is not None and failed.count > 1 and self._rank == 0:
            self._report(failed)

    def _trigger_failure(self, step: int, error: str) -> None:
        """Report the first failure (rank 0) and log it (each rank, once); count the others."""
        failed = self._trigger_failed
        if failed is None:
            self._trigger_failed = TriggerFailed(self._rank, step, error)
            log.error("step %d: %s (reported once; later failures are counted)", step, error)
            if self._rank == 0:
                self._report(self._trigger_failed)
        else:
            self._trigger_failed = msgspec.structs.replace(failed, count=failed.count + 1)

    def _evaluate(
        self, machine: TriggerMachine, step: int, time: float | None, fresh: Iterable[tuple[str, str]] = ()
    ) -> None:
        try:
            transitions = machine.update(self.values, step=step, time=time, fresh=fresh)
        except ExpressionError as exc:  # same values on every rank: every rank skips it alike
            self._trigger_failure(step, f"trigger evaluation failed: {exc}")
            return
        if transitions:
            self._sim_seq += 1
            # every rank took it: applies at the next step, no broadcast
            self._queue.append(
                transitions_decision(transitions, seq=self._sim_seq, step=step, source="monitor", local=True)
            )


def _apply_at(decision: Decision) -> int:
    assert decision.apply_at is not None, "deterministic decisions carry the step they apply at"
    return decision.apply_at


def _cut(block: Any, box: tuple[tuple[int, ...], tuple[int, ...]], region: tuple[tuple[int, int, int], ...]) -> Any:
    slices = local_part(box[0], box[1], region)
    return None if slices is None else block[slices]

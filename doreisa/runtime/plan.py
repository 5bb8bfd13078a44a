"""The compiled plan a rank runs: what it needs of the contract, as frozen msgspec records.

The contract is loaded and validated once, where the run starts (pydantic and YAML,
:mod:`doreisa.contract`). The node actor compiles it with :func:`rank_plan` and hands the plan to
each of its ranks in the :class:`~doreisa.runtime.protocol.Welcome`, so that a rank never parses
YAML nor builds pydantic models: a simulation starts thousands of them (docs/performance.md).

The records keep the contract's own field names, so :func:`rank_plan` reads them straight from
the models and the logic both sides share (:mod:`~doreisa.runtime.cadence`,
:mod:`~doreisa.runtime.layout`, :mod:`~doreisa.runtime.triggers`) reads either. A contract key
that the ranks act on is a field here too (``tests/runtime/unit/test_plan.py`` checks the names).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import msgspec

from doreisa.contract.expressions import Expression, parse_expression

if TYPE_CHECKING:
    from doreisa.contract import Contract


class SlicePlan(msgspec.Struct, frozen=True):
    """A region along one dimension (``Slice``)."""

    start: int = 0
    stop: int | None = None
    step: int = 1

    def bounds(self, size: int) -> tuple[int, int, int]:
        """``(start, stop, step)`` with ``stop`` resolved against a dimension of ``size``."""
        return self.start, size if self.stop is None else self.stop, self.step


class CadencePlan(msgspec.Struct, frozen=True):
    """When an array is copied (``Cadence``; validated where the contract or the decision was made)."""

    every: int | None = None
    every_time: float | None = None
    never: bool | None = None
    start: float = 0.0
    stop: float | None = None

    @property
    def by_time(self) -> bool:
        """True when the cadence counts simulation time rather than steps."""
        return self.every_time is not None

    def plain(self) -> dict[str, Any]:
        """Its fields but the unset ones: what ``Cadence.model_dump(exclude_none=True)`` gives."""
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}


class PreprocessPlan(msgspec.Struct, frozen=True):
    """The operator a rank applies to its block before the copy (``Preprocess``)."""

    function: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class ArrayPlan(msgspec.Struct, frozen=True):
    """One array of the contract (``ArraySpec``): a view's layout is already its array's."""

    dtype: str
    shape: tuple[int, ...]
    block: tuple[int, ...] | None = None
    select: tuple[SlicePlan, ...] | None = None
    preprocess: PreprocessPlan | None = None
    cadence: CadencePlan | None = None  # its own; RankPlan.cadence_of gives the one it follows
    of: str | None = None
    ranks: tuple[int, ...] | None = None  # the ranks that publish it, in increasing order; None: every rank

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def region(self) -> tuple[tuple[int, int, int], ...]:
        """The selected region as ``(start, stop, step)`` per dimension (the whole array by default)."""
        if self.select is None:
            return tuple((0, size, 1) for size in self.shape)
        return tuple(sl.bounds(size) for sl, size in zip(self.select, self.shape, strict=True))


class MonitorPlan(msgspec.Struct, frozen=True):
    """Reductions of an array the ranks compute every ``every`` steps (``Monitor``)."""

    array: str
    reductions: tuple[str, ...]
    every: int = 1
    select: tuple[SlicePlan, ...] | None = None


class TriggerActionPlan(msgspec.Struct, frozen=True):
    """What an active trigger changes on the ranks (``TriggerAction``; its analytics are the driver's)."""

    cadence: CadencePlan | None = None
    arrays: tuple[str, ...] | None = None


class TriggerPlan(msgspec.Struct, frozen=True):
    """A trigger (``Trigger``): its conditions as text, parsed where they are evaluated."""

    name: str
    when: str
    action: TriggerActionPlan
    until: str | None = None
    priority: int = 0


class FeedbackPlan(msgspec.Struct, frozen=True):
    """How decisions of the analytics reach the ranks (``FeedbackPolicy``)."""

    mode: str = "async"
    lag: int = 2
    sync_every: int = 1


class BackpressurePlan(msgspec.Struct, frozen=True):
    """What a rank does when the analytics fall behind (``Backpressure``)."""

    max_in_flight: int = 4
    policy: str = "block"
    staging_mb: int = 64
    max_store_fraction: float = 0.8


class TimeoutsPlan(msgspec.Struct, frozen=True):
    """The deadlines a rank keeps, in seconds (``Timeouts``)."""

    step: float = 300.0
    block: float = 600.0


class RankPlan(msgspec.Struct, frozen=True, dict=True):  # dict: room for the parsed expressions, cached
    """What a rank runs: the arrays, cadences, triggers, monitors and policies of the contract.

    ``views``, ``uses_feedback`` and ``in_simulation`` are the contract's answers, computed where
    it was loaded, so that the rules behind them are written once (:class:`~doreisa.contract.Contract`).
    """

    arrays: dict[str, ArrayPlan]
    cadence: CadencePlan
    triggers: tuple[TriggerPlan, ...]
    monitors: tuple[MonitorPlan, ...]
    feedback: FeedbackPlan
    backpressure: BackpressurePlan
    timeouts: TimeoutsPlan
    #: the views (``of:``) of each array that has some, in the contract's order
    views: dict[str, tuple[str, ...]]
    #: whether decisions may flow from the analytics to the ranks during the run
    uses_feedback: bool
    #: the triggers whose reductions are all monitored: the ranks evaluate them
    in_simulation: tuple[str, ...]

    def cadence_of(self, array: str) -> CadencePlan:
        """The base cadence of ``array`` (its own override, else the contract's)."""
        return self.arrays[array].cadence or self.cadence

    def trigger_in_simulation(self, name: str) -> bool:
        """True if the ranks evaluate trigger ``name`` (every reduction it reads is monitored)."""
        return name in self.in_simulation

    @cached_property
    def trigger_expressions(self) -> dict[str, tuple[Expression, Expression | None]]:
        """Parsed ``(when, until)`` of each trigger, by trigger name (checked when the contract loaded)."""
        return {
            t.name: (
                parse_expression(t.when, arrays=self.arrays),
                None if t.until is None else parse_expression(t.until, arrays=self.arrays),
            )
            for t in self.triggers
        }


def rank_plan(contract: Contract) -> RankPlan:
    """Compile a validated contract into the plan its ranks run.

    Reads the models' attributes (their names are the plan's), so it imports nothing of the
    contract layer itself.
    """
    in_simulation = tuple(t.name for t in contract.triggers if contract.trigger_in_simulation(t.name))
    fields = {name: getattr(contract, name) for name in RankPlan.__struct_fields__ if name != "in_simulation"}
    return msgspec.convert({**fields, "in_simulation": in_simulation}, RankPlan, from_attributes=True)

"""The contract's events: triggers and their actions, monitors, and the feedback channel.

Models like those of :mod:`doreisa.contract.models` (frozen, strict, unknown keys refused); the
checks that need the whole contract (a trigger naming an unknown array or analytic) are in
:mod:`doreisa.contract.document`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from doreisa.contract.models import (
    Cadence,
    ExpressionText,
    Identifier,
    Int,
    LocatedError,
    PositiveInt,
    Slice,
    StrictModel,
)


class TriggerAction(StrictModel):
    """What a trigger does while it is active: change a cadence, run analytics of its own, or both."""

    cadence: Cadence | None = Field(default=None, description="the cadence of 'arrays' while active")
    arrays: tuple[Identifier, ...] | None = Field(
        default=None, description="arrays whose cadence changes; default: all"
    )
    analytics: tuple[Identifier, ...] | None = Field(
        default=None,
        description="names of analytics that run only while this trigger is active (on the steps copied then)",
    )
    once: bool = Field(
        default=False, description="run 'analytics' once per activation: on the first step copied after it fires"
    )

    @model_validator(mode="after")
    def _does_something(self) -> Self:
        if self.cadence is None and not self.analytics:
            raise ValueError("an action needs a 'cadence', 'analytics', or both")
        if self.once and not self.analytics:
            raise LocatedError(("once",), "'once' applies to the action's 'analytics': name them, or drop 'once'")
        if self.arrays is not None and self.cadence is None:
            raise LocatedError(("arrays",), "'arrays' says whose cadence changes: give a 'cadence' too")
        return self


class Trigger(StrictModel):
    """While ``when`` holds, until ``until`` holds (hysteresis): change a cadence and/or run analytics."""

    name: Identifier
    when: ExpressionText
    until: ExpressionText | None = Field(
        default=None, description="release condition; default: as soon as 'when' no longer holds"
    )
    action: TriggerAction
    priority: Int = Field(default=0, description="the active trigger with the highest priority wins")


class Monitor(StrictModel):
    """Scalar reductions of an array computed in the simulation on every ``every``-th step, copied or not.

    Each rank reduces its own block (or the part inside ``select``) and the ranks combine the
    results with one small ``allgather``. A trigger whose reductions are all monitored is
    evaluated in the simulation itself, at the step the event happens.
    """

    array: Identifier
    reductions: Annotated[tuple[Literal["max", "min", "sum", "mean", "nonfinite"], ...], Field(min_length=1)]
    every: PositiveInt = Field(default=1, description="compute on every N-th step")
    select: tuple[Slice, ...] | None = Field(default=None, description="region to reduce; default: the whole array")


class FeedbackPolicy(StrictModel):
    """How decisions of the analytics (trigger changes, steering values) reach the ranks."""

    mode: Literal["async", "deterministic"] = Field(
        default="async",
        description="async: applied as soon as the ranks agree, never waiting; deterministic: at step t + lag",
    )
    lag: PositiveInt = Field(default=2, description="deterministic: a decision taken on step t applies at t + lag")
    sync_every: PositiveInt = Field(
        default=1, description="async: the ranks agree on pending decisions every N steps (one small broadcast)"
    )
    enabled: bool = Field(
        default=False, description="let analytics send steering values and cadence changes (implied by triggers)"
    )

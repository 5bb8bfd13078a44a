"""The whole contract: its sections, and the checks that span them (names referenced across sections).

The sections are in :mod:`doreisa.contract.models`; this module adds what only the whole
contract can check (a trigger or analytic naming an unknown array, duplicate names) and the
questions the runtime asks of it (an array's cadence and placement, which triggers the
simulation evaluates, how the contract travels to a rank).
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Annotated, Any, Literal, Self, cast

from pydantic import Field, field_validator, model_validator

from doreisa.contract.events import FeedbackPolicy, Monitor, Trigger
from doreisa.contract.expressions import Expression
from doreisa.contract.expressions import parse_expression as _parse
from doreisa.contract.models import (
    RESERVED_NAMES,
    TRUSTED,
    AnalyticSpec,
    ArraySpec,
    Backpressure,
    Cadence,
    Handover,
    Identifier,
    Loc,
    LocatedError,
    LocatedErrors,
    Outputs,
    Placement,
    StrictModel,
    Timeouts,
)
from doreisa.errors import ExpressionError


class Contract(StrictModel):
    """A doreisa contract: what the analytics want from the simulation, and when."""

    version: Literal[1] = 1
    arrays: Annotated[dict[Identifier, ArraySpec], Field(min_length=1)]
    cadence: Cadence = Field(default_factory=lambda: Cadence(every=1))
    triggers: tuple[Trigger, ...] = Field(default=(), max_length=64)  # one bit each in a block's tags
    monitors: tuple[Monitor, ...] = ()
    feedback: FeedbackPolicy = Field(default_factory=FeedbackPolicy)
    analytics: tuple[AnalyticSpec, ...] = ()
    placement: Placement = Field(default_factory=Placement)
    backpressure: Backpressure = Field(default_factory=Backpressure)
    handover: Handover = Field(default_factory=Handover)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    outputs: Outputs = Field(default_factory=Outputs)

    @model_validator(mode="before")
    @classmethod
    def _views_take_their_arrays_layout(cls, data: Any) -> Any:
        """A view (``of: NAME``) has the dtype, shape, block and dims of the array it views.

        Its array is checked here, for raw data and models alike: before the view's missing dtype and
        shape would hide what is wrong."""
        if not isinstance(data, Mapping):
            return data
        raw = cast(Mapping[str, Any], data)
        arrays = raw.get("arrays")
        if not isinstance(arrays, Mapping):
            return raw
        specs = cast(Mapping[str, Any], arrays)
        filled = dict(specs)
        for name, spec in specs.items():
            of = _field(spec, "of")
            if not isinstance(of, str):
                continue
            base = specs.get(of)
            if base is None:  # said before the dtype and shape the view would have taken from it
                raise LocatedError(
                    ("arrays", name, "of"), f"unknown array {of!r}; known arrays: {', '.join(sorted(specs))}"
                )
            if _field(base, "of") is not None:
                raise LocatedError(
                    ("arrays", name, "of"), f"{of!r} is itself a view of {_field(base, 'of')!r}: view that instead"
                )
            if isinstance(spec, Mapping) and isinstance(base, Mapping):
                inherited = {k: v for k, v in cast(Mapping[str, Any], base).items() if k in _LAYOUT}
                filled[name] = {**inherited, **cast(Mapping[str, Any], spec)}
        return {**raw, "arrays": filled} if filled != specs else raw

    @model_validator(mode="before")
    @classmethod
    def _finite_is_a_monitor(cls, data: Any) -> Any:
        """``finite: true`` on an array is short for a monitor of ``nonfinite(ARRAY)`` on every step."""
        if not isinstance(data, Mapping):
            return data
        raw = cast(Mapping[str, Any], data)
        arrays, monitors = raw.get("arrays"), raw.get("monitors") or ()
        if not isinstance(arrays, Mapping) or not isinstance(monitors, list | tuple):  # the fields will say what
            return raw
        flagged = [name for name, spec in cast(Mapping[str, Any], arrays).items() if _field(spec, "finite") is True]
        listed = cast(Sequence[Any], monitors)
        have = {_field(m, "array") for m in listed if "nonfinite" in (_field(m, "reductions") or ())}
        extra = [{"array": name, "reductions": ["nonfinite"]} for name in flagged if name not in have]
        return {**raw, "monitors": [*listed, *extra]} if extra else raw

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_an_integer(cls, value: Any) -> Any:
        if type(value) is not int:  # Literal[1] alone would take `true` and 1.0
            raise ValueError(f"version must be the integer 1, got {value!r}")
        return value

    @field_validator("arrays")
    @classmethod
    def _names_not_reserved(cls, arrays: dict[str, ArraySpec]) -> dict[str, ArraySpec]:
        for name in arrays:
            if name in RESERVED_NAMES:
                raise LocatedError(
                    (name,),
                    f"{name!r} is a reserved word of the expression language (reserved: "
                    f"{', '.join(sorted(RESERVED_NAMES - set(keyword.kwlist)))} and Python keywords); rename the array",
                )
        return arrays

    @model_validator(mode="after")
    def _references(self) -> Self:
        """Every check across sections; their failures are raised together (``LocatedErrors``)."""
        errors: list[LocatedError] = []

        def check(run: Callable[[], None]) -> None:
            try:
                run()
            except LocatedError as exc:
                errors.append(exc)

        check(lambda: _check_unique("triggers", [t.name for t in self.triggers], lambda i: "name"))
        labels = [a.label for a in self.analytics]
        check(lambda: _check_unique("analytics", labels, lambda i: "name" if self.analytics[i].name else "function"))
        for i, trig in enumerate(self.triggers):
            check(lambda i=i, trig=trig: self._check_trigger(i, trig))
        for i, spec in enumerate(self.analytics):
            check(lambda i=i, spec=spec: self._check_analytic(i, spec))
        for i, mon in enumerate(self.monitors):
            check(lambda i=i, mon=mon: self._check_monitor(i, mon))
        check(self._check_monitored_once)
        for name, spec in self.arrays.items():
            check(lambda name=name, spec=spec: self._check_view(name, spec))
        check(self._check_subsets)
        if errors:
            raise LocatedErrors(errors)
        return self

    def _check_monitored_once(self) -> None:
        seen: dict[tuple[str, str], int] = {}
        for i, mon in enumerate(self.monitors):
            for red in mon.reductions:
                if (red, mon.array) in seen:
                    raise LocatedError(
                        ("monitors", i, "reductions"),
                        f"{red}({mon.array}) is already computed by monitors[{seen[red, mon.array]}]; "
                        "each reduction of an array is monitored once",
                    )
                seen[red, mon.array] = i

    def _check_monitor(self, i: int, mon: Monitor) -> None:
        self._check_known(("monitors", i, "array"), mon.array)
        shape = self.arrays[mon.array].shape
        if mon.select is None:
            return
        if len(mon.select) != len(shape):
            raise LocatedError(
                ("monitors", i, "select"), f"has {len(mon.select)} dims but {mon.array!r} has {len(shape)}"
            )
        for d, (sl, size) in enumerate(zip(mon.select, shape, strict=True)):
            start, stop, _ = sl.bounds(size)
            if stop > size or start >= stop:
                raise LocatedError(
                    ("monitors", i, "select", d),
                    f"{start}:{stop} is outside dimension {d} of {mon.array!r} (size {size}) or empty",
                )

    def _check_subsets(self) -> None:
        """Arrays on a subset of the ranks (``ranks:``) take no part in what every rank computes alike."""
        for i, mon in enumerate(self.monitors):
            spec = self.arrays.get(mon.array)
            if spec is not None and spec.ranks is not None:
                raise LocatedError(
                    ("monitors", i, "array"),
                    f"{mon.array!r} is published by ranks {list(spec.ranks)} only, and every rank computes a "
                    "monitor (finite: true is one); monitor an array every rank publishes",
                )
        subsets_only = self.arrays and all(s.ranks is not None for s in self.arrays.values())
        if subsets_only and (self.triggers or self.uses_feedback):
            raise LocatedError(
                ("arrays", next(iter(self.arrays)), "ranks"),
                "every array is published by a subset of the ranks, but triggers and feedback are applied by "
                "every rank when it publishes an array that every rank publishes: add one, or leave out ranks",
            )

    def _check_view(self, name: str, spec: ArraySpec) -> None:
        if spec.of is None:
            return
        base = self.arrays[spec.of]  # known and not a view: checked before validation
        for key in sorted(_LAYOUT):
            if getattr(spec, key) != getattr(base, key):
                raise LocatedError(
                    ("arrays", name, key), f"a view has the {key} of the array it views ({spec.of!r}): leave {key} out"
                )

    @cached_property
    def views(self) -> dict[str, list[str]]:
        """The views (``of:``) of each array that has some, in the contract's order."""
        out: dict[str, list[str]] = {}
        for name, spec in self.arrays.items():
            if spec.of is not None:
                out.setdefault(spec.of, []).append(name)
        return out

    def _check_trigger(self, i: int, trig: Trigger) -> None:
        for key, text in (("when", trig.when), ("until", trig.until)):
            if text is not None:
                try:
                    _parse(text, arrays=self.arrays)
                except ExpressionError as exc:
                    raise LocatedError(("triggers", i, key), str(exc)) from exc
        for k, name in enumerate(trig.action.arrays or ()):
            self._check_known(("triggers", i, "action", "arrays", k), name)
        labels = [a.label for a in self.analytics]
        for k, label in enumerate(trig.action.analytics or ()):
            if label not in labels:
                raise LocatedError(
                    ("triggers", i, "action", "analytics", k),
                    f"unknown analytic {label!r}; the contract's analytics are named {', '.join(labels) or 'nothing'}",
                )

    @cached_property
    def gated(self) -> dict[str, list[Trigger]]:
        """The analytics that run only while a trigger is active, with the triggers that let them run."""
        out: dict[str, list[Trigger]] = {}
        for trig in self.triggers:
            for label in trig.action.analytics or ():
                out.setdefault(label, []).append(trig)
        return out

    def _check_analytic(self, i: int, spec: AnalyticSpec) -> None:
        keys = list(spec.arrays) if isinstance(spec.arrays, dict) else range(len(spec.arrays))
        for key, name in zip(keys, spec.array_names, strict=True):
            self._check_known(("analytics", i, "arrays", key), name)
        for name in spec.array_names:
            limit = self.arrays[name].window
            if spec.window is not None and limit is not None and spec.window > limit:
                raise LocatedError(
                    ("analytics", i, "window"),
                    f"{spec.label} asks for window {spec.window} on {name!r}, which keeps {limit}; "
                    f"raise arrays.{name}.window or lower the analytic's window",
                )

    def _check_known(self, loc: Loc, name: str) -> None:
        if name not in self.arrays:
            raise LocatedError(loc, f"unknown array {name!r}; known arrays: {', '.join(sorted(self.arrays))}")

    def to_plain(self) -> dict[str, Any]:
        """The contract as plain data: what a node actor hands its ranks beside the plan they run, for
        ``Bridge.contract`` (see :meth:`from_plain` and :mod:`doreisa.runtime.plan`)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> Contract:
        """A contract from :meth:`to_plain`, validated where it was loaded.

        Its structure is checked again, not the plugins it names: a rank need not import the
        analytics' output sinks (it builds its own operators, and says so if one is missing).
        """
        return cls.model_validate(data, context={TRUSTED: True})

    def cadence_of(self, array: str) -> Cadence:
        """The base cadence of ``array`` (its own override, else the contract's)."""
        return self.arrays[array].cadence or self.cadence

    def placement_of(self, array: str) -> Placement:
        """The placement of ``array`` (its own override, else the contract's)."""
        return self.arrays[array].placement or self.placement

    @property
    def monitored(self) -> frozenset[tuple[str, str]]:
        """The (reduction, array) pairs the simulation computes on its own."""
        return frozenset((r, m.array) for m in self.monitors for r in m.reductions)

    def trigger_in_simulation(self, name: str) -> bool:
        """True if every reduction trigger ``name`` uses is monitored: it is evaluated by the ranks."""
        when, until = self.trigger_expressions[name]
        needed = set(when.reductions)
        if until is not None:
            needed |= until.reductions
        return needed <= self.monitored

    @property
    def uses_feedback(self) -> bool:
        """Whether decisions may flow from the analytics to the ranks during the run."""
        return self.feedback.enabled or any(not self.trigger_in_simulation(t.name) for t in self.triggers)

    @cached_property
    def trigger_expressions(self) -> dict[str, tuple[Expression, Expression | None]]:
        """Parsed ``(when, until)`` of each trigger, by trigger name."""
        return {
            t.name: (
                _parse(t.when, arrays=self.arrays),
                None if t.until is None else _parse(t.until, arrays=self.arrays),
            )
            for t in self.triggers
        }


#: What a view takes from the array it views.
_LAYOUT = frozenset({"dtype", "shape", "block", "dims", "ranks"})


def _field(item: Any, key: str) -> Any:
    """``item[key]`` of raw input, or the attribute of a model given instead."""
    return cast(Mapping[str, Any], item).get(key) if isinstance(item, Mapping) else getattr(item, key, None)


def _check_unique(section: str, names: list[str], key_of: Callable[[int], str]) -> None:
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            raise LocatedError(
                (section, i, key_of(i)),
                f"{name!r} is already used by {section}[{first[name]}]; give each entry a unique 'name'",
            )
        first[name] = i

"""The contract models: frozen, strict pydantic v2 models of a doreisa contract.

Every model forbids unknown keys, so a typo such as ``windw:`` is an error rather than a
silently ignored key. Checks that span several fields are ``after`` validators that raise
``ValueError``; pydantic adds the location and :mod:`doreisa.contract.loader` turns that
location into ``file:line:column`` and a key path.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

from doreisa.contract.expressions import CONSTANTS, REDUCTIONS, SCALAR_FUNCTIONS, VARIABLES, Expression
from doreisa.contract.expressions import parse_expression as _parse

DTYPES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
    "complex64",
    "complex128",
)
DType = Literal[
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
    "complex64",
    "complex128",
]
_RESERVED = frozenset([*VARIABLES, *CONSTANTS, *REDUCTIONS, *SCALAR_FUNCTIONS, "and", "or", "not"])
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
Scalar = str | int | float | bool
ParamValue = Scalar | list[Scalar]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True)


class Slice(_Model):
    """A region along one dimension: indices ``start, start+step, ...`` below ``stop``."""

    start: Annotated[int, Field(ge=0)] = 0
    stop: PositiveInt | None = Field(default=None, description="exclusive; null means the end of the dimension")
    step: PositiveInt = 1

    def bounds(self, size: int) -> tuple[int, int, int]:
        """``(start, stop, step)`` with ``stop`` resolved against a dimension of ``size``."""
        return self.start, size if self.stop is None else self.stop, self.step


class Cadence(_Model):
    """When an array is copied: every N steps, or every T units of simulation time.

    ``start``/``stop`` are steps for ``every`` and simulation time for ``every_time``;
    ``stop`` is inclusive.
    """

    every: PositiveInt | None = Field(default=None, description="copy every N steps")
    every_time: PositiveFloat | None = Field(default=None, description="copy every T units of simulation time")
    start: Annotated[float, Field(ge=0)] = 0
    stop: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.every is None) == (self.every_time is None):
            raise ValueError("give exactly one of 'every' (steps) or 'every_time' (simulation time)")
        if self.stop is not None and self.stop < self.start:
            raise ValueError(f"stop ({self.stop}) is before start ({self.start})")
        if self.every is not None and not (float(self.start).is_integer()):
            raise ValueError(f"start must be a whole step with 'every', got {self.start}")
        return self

    @property
    def by_time(self) -> bool:
        """True when the cadence counts simulation time rather than steps."""
        return self.every_time is not None


class Preprocess(_Model):
    """A chunk-local function applied to each block in the simulation process before the copy."""

    function: str = Field(description="a built-in (see docs/contract.md) or 'module:function'")
    params: dict[Identifier, ParamValue] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"function": data} if isinstance(data, str) else data


class Placement(_Model):
    """Where analytics read the data: on the simulation's nodes, or on dedicated nodes."""

    mode: Literal["in_situ", "in_transit"] = "in_situ"
    analytics_resource: Identifier = Field(
        default="doreisa_analytics",
        description="in_transit: the Ray custom resource that marks the analytics nodes",
    )


class ArraySpec(_Model):
    """One array the simulation may publish, and what the analytics want of it."""

    dtype: DType
    shape: Annotated[tuple[PositiveInt, ...], Field(min_length=1, max_length=8)]
    block: Annotated[tuple[PositiveInt, ...], Field(min_length=1, max_length=8)] | None = Field(
        default=None, description="uniform block shape of each rank; null: each rank gives its offset"
    )
    dims: tuple[Identifier, ...] | None = None
    select: tuple[Slice, ...] | None = None
    preprocess: Preprocess | None = None
    window: PositiveInt | None = Field(
        default=None, description="how many steps the analytics may see at once; default: what they ask for"
    )
    cadence: Cadence | None = Field(default=None, description="overrides the contract's cadence for this array")
    placement: Placement | None = Field(default=None, description="overrides the contract's placement")

    @model_validator(mode="before")
    @classmethod
    def _select_by_dim_name(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("select"), dict):
            return data
        select: dict[str, Any] = data["select"]  # pyright: ignore[reportUnknownVariableType]
        dims = data.get("dims")
        if not isinstance(dims, list | tuple):
            raise ValueError("select given by dimension name needs 'dims'; or give select as a list, one per dim")
        unknown = sorted(set(select) - set(dims))  # pyright: ignore[reportUnknownArgumentType]
        if unknown:
            raise ValueError(f"select names unknown dims {unknown}; dims are {list(dims)}")  # pyright: ignore
        return {**data, "select": [select.get(d, {}) for d in dims]}  # pyright: ignore[reportUnknownVariableType]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        ndim = len(self.shape)
        for key, value in (("block", self.block), ("dims", self.dims), ("select", self.select)):
            if value is not None and len(value) != ndim:
                raise ValueError(f"{key} has {len(value)} dims but shape {list(self.shape)} has {ndim}")
        if self.block is not None:
            bad = [i for i, (s, b) in enumerate(zip(self.shape, self.block, strict=True)) if s % b]
            if bad:
                raise ValueError(
                    f"block {list(self.block)} does not tile shape {list(self.shape)} along dims {bad}: each shape "
                    "must be a multiple of the block; for uneven tilings leave out 'block' and pass offsets"
                )
        if self.dims is not None and len(set(self.dims)) != ndim:
            raise ValueError(f"dims {list(self.dims)} repeat a name")
        if self.select is not None:
            for i, (sl, size) in enumerate(zip(self.select, self.shape, strict=True)):
                start, stop, _ = sl.bounds(size)
                if stop > size or start >= stop:
                    raise ValueError(
                        f"select[{i}] = {start}:{stop} is outside dimension {i} of size {size} or empty; "
                        f"use 0 <= start < stop <= {size}"
                    )
        return self

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

    @property
    def selected_shape(self) -> tuple[int, ...]:
        """Shape of the region the analytics see (before any preprocessing)."""
        return tuple(math.ceil((stop - start) / step) for start, stop, step in self.region)


class TriggerAction(_Model):
    """What a trigger does while it is active."""

    cadence: Cadence
    arrays: tuple[Identifier, ...] | None = Field(default=None, description="arrays affected; default: all")


class Trigger(_Model):
    """Change the cadence while ``when`` holds, until ``until`` holds (hysteresis)."""

    name: Identifier
    when: Annotated[str, Field(max_length=100_000)]
    until: Annotated[str, Field(max_length=100_000)] | None = Field(
        default=None, description="release condition; default: as soon as 'when' no longer holds"
    )
    action: TriggerAction
    priority: int = Field(default=0, description="the active trigger with the highest priority wins")


class AnalyticSpec(_Model):
    """One analytic to run: a registered function bound to arrays of the contract."""

    function: Annotated[str, Field(min_length=1, description="registered name, or 'module:function'")]
    name: Identifier | None = Field(default=None, description="label in the results; default: the function")
    arrays: tuple[Identifier, ...] | dict[Identifier, Identifier] = Field(
        description="arrays bound to the function's positional parameters in order, or {parameter: array}"
    )
    window: PositiveInt | None = Field(default=None, description="steps per call; default: the registered one")
    params: dict[Identifier, ParamValue] = Field(default_factory=dict, description="extra keyword arguments")

    @field_validator("arrays")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...] | dict[str, str]) -> tuple[str, ...] | dict[str, str]:
        if not value:
            raise ValueError("an analytic needs at least one array")
        return value

    @property
    def label(self) -> str:
        """The name results are recorded under."""
        return self.name or self.function.rsplit(":", 1)[-1]

    @property
    def array_names(self) -> tuple[str, ...]:
        """The contract arrays this analytic reads."""
        return tuple(self.arrays.values()) if isinstance(self.arrays, dict) else self.arrays


class Backpressure(_Model):
    """At most ``max_in_flight`` published steps not yet analysed; what to do when full."""

    max_in_flight: PositiveInt = 4
    policy: Literal["block", "skip"] = Field(
        default="block", description="block: the simulation waits; skip: the step is not copied, and counted"
    )


class Timeouts(_Model):
    """Deadlines, in seconds. Nothing in doreisa waits without one."""

    connect: PositiveFloat = Field(default=60, description="ranks and runtime wait this long for each other")
    step: PositiveFloat = Field(default=300, description="a step still incomplete after this is reported lost")
    block: PositiveFloat = Field(default=600, description="policy block: longest wait for room before failing")
    analytic: PositiveFloat | None = Field(default=None, description="longest run of one analytic call")


class Outputs(_Model):
    """Where ``doreisa run`` writes results."""

    directory: str | None = Field(default=None, description="default: the --output of doreisa run")
    formats: tuple[Literal["csv", "npy"], ...] = ("csv", "npy")


class Contract(_Model):
    """A doreisa contract: what the analytics want from the simulation, and when."""

    version: Literal[1] = 1
    arrays: Annotated[dict[Identifier, ArraySpec], Field(min_length=1)]
    cadence: Cadence = Field(default_factory=lambda: Cadence(every=1))
    triggers: tuple[Trigger, ...] = ()
    analytics: tuple[AnalyticSpec, ...] = ()
    placement: Placement = Field(default_factory=Placement)
    backpressure: Backpressure = Field(default_factory=Backpressure)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    outputs: Outputs = Field(default_factory=Outputs)

    @field_validator("arrays")
    @classmethod
    def _names_not_reserved(cls, arrays: dict[str, ArraySpec]) -> dict[str, ArraySpec]:
        clash = sorted(set(arrays) & _RESERVED)
        if clash:
            raise ValueError(f"array names {clash} are reserved words of the expression language; rename them")
        return arrays

    @model_validator(mode="after")
    def _references(self) -> Self:
        self._check_names("triggers", [t.name for t in self.triggers])
        self._check_names("analytics", [a.label for a in self.analytics])
        for i, trig in enumerate(self.triggers):
            for field_name in ("when", "until"):
                text = getattr(trig, field_name)
                if text is not None:
                    _parse(text, arrays=self.arrays)
            self._check_known(f"triggers[{i}].action.arrays", trig.action.arrays or ())
        for i, spec in enumerate(self.analytics):
            self._check_known(f"analytics[{i}].arrays", spec.array_names)
            for name in spec.array_names:
                limit = self.arrays[name].window
                if spec.window is not None and limit is not None and spec.window > limit:
                    raise ValueError(
                        f"analytics[{i}] ({spec.label}) asks for window {spec.window} on {name!r}, "
                        f"which keeps {limit}; raise arrays.{name}.window or lower the analytic's window"
                    )
        return self

    def _check_known(self, where: str, names: tuple[str, ...]) -> None:
        unknown = [n for n in names if n not in self.arrays]
        if unknown:
            raise ValueError(f"{where} names unknown arrays {unknown}; known arrays: {sorted(self.arrays)}")

    @staticmethod
    def _check_names(section: str, names: list[str]) -> None:
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{section}: names {dup} are used more than once; give each a unique 'name'")

    def cadence_of(self, array: str) -> Cadence:
        """The base cadence of ``array`` (its own override, else the contract's)."""
        return self.arrays[array].cadence or self.cadence

    def placement_of(self, array: str) -> Placement:
        """The placement of ``array`` (its own override, else the contract's)."""
        return self.arrays[array].placement or self.placement

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

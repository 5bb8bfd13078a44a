"""The contract models: frozen, strict pydantic v2 models of a doreisa contract.

Every model forbids unknown keys, so a typo such as ``windw:`` is an error rather than a
silently ignored key. Checks that span several fields are ``after`` validators that raise
``ValueError``; pydantic adds the location and :mod:`doreisa.contract.loader` turns that
location into ``file:line:column`` and a key path.
"""

from __future__ import annotations

import keyword
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, cast, get_args

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationInfo, field_validator, model_validator

from doreisa.contract.expressions import (
    CONSTANTS,
    HISTORY,
    MAX_LENGTH,
    REDUCTIONS,
    SCALAR_FUNCTIONS,
    VARIABLES,
)
from doreisa.plugins import PREPROCESSORS, SINKS, ParamError, check_preprocess

DType = Literal[
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float32", "float64", "complex64", "complex128",
]  # fmt: skip
#: The dtypes an array may have, in the contract's order.
DTYPES: tuple[str, ...] = get_args(DType)
# Python keywords too: an array named `if` or `None` could never appear in an expression.
RESERVED_NAMES = frozenset([*VARIABLES, *CONSTANTS, *REDUCTIONS, *SCALAR_FUNCTIONS, *HISTORY, *keyword.kwlist])
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
# Strict numbers: YAML `true`, "16" or 2.5 is a mistake, not a count (floats still accept ints).
Int = Annotated[int, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
ExpressionText = Annotated[str, Field(min_length=1, max_length=MAX_LENGTH)]
Scalar = str | int | float | bool
ParamValue = Scalar | list[Scalar]
Loc = tuple[str | int, ...]


class LocatedError(ValueError):
    """A check across fields that failed at ``loc``, a key path below the model that raises it.

    pydantic keeps the exception in the error's ``ctx``; the loader appends ``loc`` to the
    location so the message points at the offending key and line, not at the enclosing mapping.
    """

    def __init__(self, loc: Loc, message: str) -> None:
        self.loc = loc
        self.message = message
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        super().__init__(f"{where}: {message}" if where else message)


class LocatedErrors(LocatedError):
    """Several checks across fields that failed at once: the loader reports each at its own line."""

    def __init__(self, errors: list[LocatedError]) -> None:
        super().__init__(errors[0].loc, errors[0].message)
        self.errors = errors


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True)


class Slice(StrictModel):
    """A region along one dimension: indices ``start, start+step, ...`` below ``stop``."""

    start: NonNegativeInt = 0
    stop: PositiveInt | None = Field(default=None, description="exclusive; null means the end of the dimension")
    step: PositiveInt = 1

    def bounds(self, size: int) -> tuple[int, int, int]:
        """``(start, stop, step)`` with ``stop`` resolved against a dimension of ``size``."""
        return self.start, size if self.stop is None else self.stop, self.step


class Cadence(StrictModel):
    """When an array is copied: every N steps, or every T units of simulation time.

    ``start``/``stop`` are steps for ``every`` and simulation time for ``every_time``;
    ``stop`` is inclusive.
    """

    every: PositiveInt | None = Field(default=None, description="copy every N steps")
    every_time: PositiveFloat | None = Field(default=None, description="copy every T units of simulation time")
    never: bool | None = Field(
        default=None, description="true: copy no step (until a trigger or the analytics change it)"
    )
    start: NonNegativeFloat = 0
    stop: NonNegativeFloat | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.every is not None and self.every_time is not None:
            raise LocatedError(("every_time",), "give only one of 'every' (steps) or 'every_time' (simulation time)")
        if self.never and (self.every is not None or self.every_time is not None):
            raise LocatedError(("never",), "'never' copies no step: give it alone, without 'every' or 'every_time'")
        if self.every is None and self.every_time is None and not self.never:
            raise ValueError("give exactly one of 'every' (steps), 'every_time' (simulation time) or 'never: true'")
        if self.stop is not None and self.stop < self.start:
            raise LocatedError(("stop",), f"stop ({self.stop}) is before start ({self.start}); use stop >= start")
        if self.every is not None and not float(self.start).is_integer():
            raise LocatedError(("start",), f"start must be a whole step with 'every', got {self.start}")
        return self

    @property
    def by_time(self) -> bool:
        """True when the cadence counts simulation time rather than steps."""
        return self.every_time is not None


#: Validation context of a contract that was validated where it was loaded and comes to a rank
#: as plain data (see :meth:`Contract.from_plain`): the plugins it names need not be registered there.
TRUSTED = "doreisa_trusted"


def _trusted(info: ValidationInfo) -> bool:
    context: Any = info.context
    return isinstance(context, dict) and cast("dict[str, Any]", context).get(TRUSTED) is True


class Preprocess(StrictModel):
    """A chunk-local function applied to each block in the simulation process before the copy."""

    function: Annotated[
        str,
        Field(
            min_length=1,
            description="a registered operator (built-ins: downsample, cast, stats; see docs/contract.md) "
            "or 'module:function'",
        ),
    ]
    params: dict[Identifier, ParamValue] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"function": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo) -> Self:
        name, params = self.function, self.params
        if _trusted(info):
            return self
        if ":" not in name and name not in PREPROCESSORS:
            raise LocatedError(
                ("function",),
                f"unknown preprocess {name!r}; registered: {', '.join(PREPROCESSORS)}, or 'module:function' "
                "(register your own with doreisa.register_preprocessor, imported before the contract loads)",
            )
        if "dtype" in params and params["dtype"] not in DTYPES:  # what is copied must be an array dtype
            raise LocatedError(("params", "dtype"), f"must be one of {', '.join(DTYPES)}; got {params['dtype']!r}")
        try:
            check_preprocess(name, params)
        except ParamError as exc:
            raise LocatedError(exc.loc, exc.message) from None
        return self


class Placement(StrictModel):
    """Where analytics read the data: on the simulation's nodes, or on dedicated nodes."""

    mode: Literal["in_situ", "in_transit", "auto"] = Field(
        default="in_situ",
        description="in_situ: blocks stay on the simulation's nodes; in_transit: they go to the analytics nodes; "
        "auto: in situ while the node's store has room (store_fraction), else in transit, decided per step",
    )
    analytics_resource: Identifier = Field(
        default="doreisa_analytics",
        description="in_transit and auto: the Ray custom resource that marks the analytics nodes",
    )
    store_fraction: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="auto: a step goes in transit when the node's steps in situ not analysed yet would pass this "
        "fraction of its object store",
    )
    device: Literal["cpu", "gpu"] = Field(
        default="cpu",
        description="gpu: the analytics' parts over the array run on Ray workers with a GPU (num_gpus=1), their "
        "blocks as CuPy arrays, and return host values; the cluster must have GPUs (pip install 'doreisa[gpu]')",
    )


class ArraySpec(StrictModel):
    """One array the simulation may publish, and what the analytics want of it."""

    dtype: DType
    shape: Annotated[tuple[PositiveInt, ...], Field(min_length=1, max_length=8)]
    block: Annotated[tuple[PositiveInt, ...], Field(min_length=1, max_length=8)] | None = Field(
        default=None, description="uniform block shape of each rank; null: each rank gives its offset"
    )
    dims: tuple[Identifier, ...] | None = None
    select: tuple[Slice, ...] | None = Field(
        default=None, description="region to copy: one slice per dimension, or {dim name: slice} with 'dims'"
    )
    preprocess: Preprocess | None = Field(
        default=None, description="function applied to each block before the copy; a string is the function"
    )
    window: PositiveInt | None = Field(
        default=None, description="how many steps the analytics may see at once; default: what they ask for"
    )
    cadence: Cadence | None = Field(default=None, description="overrides the contract's cadence for this array")
    placement: Placement | None = Field(default=None, description="overrides the contract's placement")
    of: Identifier | None = Field(
        default=None,
        description="a view of another array: the simulation publishes that one, and the bridge copies this "
        "array's own select of it at its own cadence (a zoom that a trigger turns on); dtype, shape, block and "
        "dims come from that array",
    )
    ranks: Annotated[tuple[NonNegativeInt, ...], Field(min_length=1)] | None = Field(
        default=None,
        description="the ranks that publish this array, in increasing order: a list, or ranges as text ('0-3, 8'); "
        "the others never call publish for it; default: every rank",
    )
    finite: bool = Field(
        default=False,
        description="count NaN and Inf in every rank's block at every step, copied or not, and report the steps "
        "that have any; short for a monitor of nonfinite(ARRAY), which triggers may read",
    )

    # json_schema_input_type: the schema must admit the shorthand forms, or editors flag valid contracts.
    @field_validator("preprocess", mode="before", json_schema_input_type=str | Preprocess | None)
    @classmethod
    def _preprocess_shorthand(cls, value: Any) -> Any:
        return {"function": value} if isinstance(value, str) else value

    @field_validator("ranks", mode="before", json_schema_input_type=str | tuple[NonNegativeInt, ...] | None)
    @classmethod
    def _rank_ranges(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            spans = [[int(n) for n in part.split("-")] for part in value.split(",")]
        except ValueError:
            spans = []
        if not spans or any(len(s) > 2 or s[0] > s[-1] for s in spans):
            raise ValueError(f"ranks {value!r}: give ranks as a list, or ranges such as '0-3, 8'")
        return [r for span in spans for r in range(span[0], span[-1] + 1)]

    @field_validator("select", mode="before", json_schema_input_type=tuple[Slice, ...] | dict[str, Slice] | None)
    @classmethod
    def _select_by_dim_name(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, Mapping):
            return value
        select: Mapping[Any, Any] = value  # pyright: ignore[reportUnknownVariableType]
        dims: tuple[str, ...] | None = info.data.get("dims")
        if dims is None:
            raise ValueError("select given by dimension name needs valid 'dims'; or give select as a list, one per dim")
        for name in select:
            if name not in dims:
                raise LocatedError((str(name),), f"select names unknown dim {name!r}; dims are {list(dims)}")
        return [select.get(d, {}) for d in dims]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        ndim = len(self.shape)
        for key, value in (("block", self.block), ("dims", self.dims), ("select", self.select)):
            if value is not None and len(value) != ndim:
                raise LocatedError((key,), f"{key} has {len(value)} dims but shape {list(self.shape)} has {ndim}")
        if self.block is not None:
            bad = [i for i, (s, b) in enumerate(zip(self.shape, self.block, strict=True)) if s % b]
            if bad:
                raise LocatedError(
                    ("block",),
                    f"block {list(self.block)} does not tile shape {list(self.shape)} along dims {bad}: each shape "
                    "must be a multiple of the block; for uneven tilings leave out 'block' and pass offsets",
                )
        if self.ranks is not None and list(self.ranks) != sorted(set(self.ranks)):
            raise LocatedError(("ranks",), f"{list(self.ranks)}: list each rank once, in increasing order")
        if self.dims is not None and len(set(self.dims)) != ndim:
            raise LocatedError(("dims",), f"dims {list(self.dims)} repeat a name; give each dimension its own")
        self._check_select()
        return self

    def _check_select(self) -> None:
        for i, (sl, size) in enumerate(zip(self.select or (), self.shape, strict=False)):
            start, stop, _ = sl.bounds(size)
            if stop > size or start >= stop:
                raise LocatedError(
                    ("select", i),
                    f"{start}:{stop} is outside dimension {i} of size {size} or empty; use 0 <= start < stop <= {size}",
                )

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


class AnalyticSpec(StrictModel):
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


class Backpressure(StrictModel):
    """At most ``max_in_flight`` published steps not yet analysed; what to do when full."""

    max_in_flight: PositiveInt = 4
    policy: Literal["block", "skip", "latest"] = Field(
        default="block",
        description="block: the simulation waits; skip: the step is not copied, and counted; latest: the step is "
        "copied, and the oldest step waiting for the analytics (not yet started) is dropped, and counted",
    )
    staging_mb: PositiveInt = Field(
        default=64,
        description="node shared memory (MiB) each rank may fill per array before publish waits for the node actor",
    )
    max_store_fraction: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="warn when a block, or what a node's ranks can keep in flight, is over this fraction of the "
        "node's Ray object store (Ray would write it to disk)",
    )


class Handover(StrictModel):
    """How a rank hands a copied block over to its node actor (see docs/runtime.md)."""

    poll_ms: PositiveFloat = Field(
        default=1.0, le=1000, description="while blocks keep coming, the node actor reads the rings this often (ms)"
    )
    linger_ms: NonNegativeFloat = Field(
        default=250,
        description="the node actor polls while the last block is more recent than this (ms); 0: it never polls, "
        "and every block wakes it with a system call",
    )


class Timeouts(StrictModel):
    """Deadlines, in seconds. Nothing in doreisa waits without one."""

    connect: PositiveFloat = Field(default=60, description="ranks and runtime wait this long for each other")
    step: PositiveFloat = Field(default=300, description="a step still incomplete after this is reported lost")
    block: PositiveFloat = Field(default=600, description="policy block: longest wait for room before failing")
    analytic: PositiveFloat | None = Field(
        default=300,
        description="longest run of one analytic call; a call that runs longer is abandoned and reported failed, "
        "and the others go on; null: no limit (a hung analytic then stops the analysis)",
    )


class Outputs(StrictModel):
    """Where ``doreisa run`` writes results."""

    directory: str | None = Field(default=None, description="default: the --output of doreisa run")
    formats: tuple[Identifier, ...] = Field(
        default=("csv", "npy"),
        description="registered output sinks, each at most once (built-ins: csv, npy, parquet, zarr, netcdf; "
        "see docs/outputs.md)",
    )

    @field_validator("formats")
    @classmethod
    def _registered(cls, formats: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        for i, name in enumerate(formats):
            if name in formats[:i]:
                raise LocatedError((i,), f"{name!r} is listed twice")
            if _trusted(info):
                continue
            if name not in SINKS:
                raise LocatedError(
                    (i,),
                    f"unknown output format {name!r}; registered: {', '.join(SINKS)} (register your own with "
                    "doreisa.register_sink, imported before the contract loads)",
                )
            missing = SINKS.get(name).missing()
            if missing:
                raise LocatedError((i,), f"output format {name!r} cannot be written here: {missing}")
        return formats

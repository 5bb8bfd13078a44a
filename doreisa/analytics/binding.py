"""Bind the contract's ``analytics`` section to registered functions, before anything runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from doreisa.analytics.registry import Analytic, Registry
from doreisa.contract import AnalyticSpec, Contract
from doreisa.errors import AnalyticsError


@dataclass(frozen=True)
class BoundAnalytic:
    """An analytic of the contract, resolved: what to call, with which arrays and window."""

    label: str
    analytic: Analytic
    inputs: Mapping[str, str]  # parameter -> contract array
    window: int
    params: Mapping[str, Any]

    @property
    def arrays(self) -> tuple[str, ...]:
        """Contract arrays read, in parameter order."""
        return tuple(self.inputs.values())

    def call(self, arrays: Mapping[str, Any], *, steps: list[int], times: list[float | None]) -> Any:
        """Call the function; ``arrays`` maps each array to one value (window 1) or a list."""
        context = {"step": steps[-1], "time": times[-1], "steps": steps, "times": times}
        kwargs = {k: v for k, v in context.items() if k in self.analytic.context}
        args = [arrays[name] for name in self.inputs.values()]
        return self.analytic.fn(*args, **kwargs, **self.params)


def bind_analytics(contract: Contract, registry: Registry) -> list[BoundAnalytic]:
    """Resolve every ``analytics[i]`` entry; all problems are reported together.

    Raises
    ------
    AnalyticsError
        Listing each entry that names an unknown function or does not fit its signature.
    """
    bound: list[BoundAnalytic] = []
    problems: list[str] = []
    for i, spec in enumerate(contract.analytics):
        try:
            bound.append(_bind_one(spec, registry, contract))
        except AnalyticsError as exc:
            problems.append(f"analytics[{i}] ({spec.label}): {exc}")
    if problems:
        raise AnalyticsError("cannot bind the contract's analytics:\n  " + "\n  ".join(problems))
    return bound


def _bind_one(spec: AnalyticSpec, registry: Registry, contract: Contract) -> BoundAnalytic:
    entry = registry.get(spec.function)
    if isinstance(spec.arrays, dict):
        unknown = sorted(set(spec.arrays) - set(entry.inputs))
        missing = sorted(set(entry.inputs) - set(spec.arrays))
        if unknown or missing:
            raise AnalyticsError(
                f"arrays maps parameters {sorted(spec.arrays)} but {entry.name} takes {list(entry.inputs)}"
            )
        inputs = {p: spec.arrays[p] for p in entry.inputs}
    else:
        if len(spec.arrays) != len(entry.inputs):
            raise AnalyticsError(
                f"{len(spec.arrays)} arrays {list(spec.arrays)} given but {entry.name} takes "
                f"{len(entry.inputs)} array parameters {list(entry.inputs)}"
            )
        inputs = dict(zip(entry.inputs, spec.arrays, strict=True))
    unknown_params = sorted(set(spec.params) - set(entry.options))
    if unknown_params:
        raise AnalyticsError(
            f"params {unknown_params} are not options of {entry.name}; options: {sorted(entry.options)}"
        )
    missing_params = sorted(p for p, has_default in entry.options.items() if not has_default and p not in spec.params)
    if missing_params:
        raise AnalyticsError(f"{entry.name} needs params {missing_params}; add them under params:")
    window = spec.window or entry.window
    for array in inputs.values():
        limit = contract.arrays[array].window
        if limit is not None and window > limit:
            raise AnalyticsError(f"window {window} is larger than arrays.{array}.window = {limit}")
    return BoundAnalytic(spec.label, entry, inputs, window, dict(spec.params))


def windows_needed(contract: Contract, bound: list[BoundAnalytic]) -> dict[str, int]:
    """How many steps of each array the runtime must keep."""
    need = {name: spec.window or 1 for name, spec in contract.arrays.items()}
    for b in bound:
        for array in b.arrays:
            need[array] = max(need[array], b.window)
    return need

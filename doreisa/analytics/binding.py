"""Bind the contract's ``analytics`` section to registered functions, before anything runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doreisa.analytics.feedback import Feedback
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

    def call(
        self,
        arrays: Mapping[str, Any],
        *,
        steps: list[int],
        times: list[float | None],
        feedback: Feedback | None = None,
        output: Path | None = None,
    ) -> Any:
        """Call the function; ``arrays`` maps each array to one value (window 1) or a list.

        ``output``: the run's output folder (None: results kept in memory), for analytics that write files.
        """
        context = {"step": steps[-1], "time": times[-1], "steps": steps, "times": times, "feedback": feedback}
        context |= {"label": self.label, "output": output}
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
    problems: list[str] = []
    inputs = _inputs(spec, entry, problems)
    unknown_params = sorted(set(spec.params) - set(entry.options))
    if unknown_params:
        problems.append(f"params {unknown_params} are not options of {entry.name}; options: {sorted(entry.options)}")
    missing_params = sorted(p for p, has_default in entry.options.items() if not has_default and p not in spec.params)
    if missing_params:
        problems.append(f"{entry.name} needs params {missing_params}; add them under params:")
    if entry.named is True:
        unnamed = sorted({a for a in inputs.values() if contract.arrays[a].dims is None})
        if unnamed:
            raise AnalyticsError(f"{entry.name} is registered named=True but arrays {unnamed} have no dims")
    if "feedback" in entry.context and not contract.uses_feedback:
        raise AnalyticsError(
            f"{entry.name} takes 'feedback' but the contract's feedback channel is off; "
            "add `feedback: {enabled: true}`"
        )
    window = spec.window or entry.window
    for array in spec.array_names:
        limit = contract.arrays[array].window
        if limit is not None and window > limit:
            problems.append(
                f"window {window} is larger than arrays.{array}.window = {limit}; "
                f"raise arrays.{array}.window or set this analytic's window"
            )
    if problems:
        raise AnalyticsError("; ".join(problems))
    return BoundAnalytic(spec.label, entry, inputs, window, dict(spec.params))


def _inputs(spec: AnalyticSpec, entry: Analytic, problems: list[str]) -> dict[str, str]:
    if isinstance(spec.arrays, dict):
        if set(spec.arrays) != set(entry.inputs):
            problems.append(f"arrays maps parameters {sorted(spec.arrays)} but {entry.name} takes {list(entry.inputs)}")
            return {}
        return {p: spec.arrays[p] for p in entry.inputs}
    if len(spec.arrays) != len(entry.inputs):
        problems.append(
            f"{len(spec.arrays)} arrays {list(spec.arrays)} given but {entry.name} takes "
            f"{len(entry.inputs)} array parameters {list(entry.inputs)}"
        )
        return {}
    return dict(zip(entry.inputs, spec.arrays, strict=True))


def windows_needed(contract: Contract, bound: list[BoundAnalytic]) -> dict[str, int]:
    """How many steps of each array the runtime must keep."""
    need = {name: spec.window or 1 for name, spec in contract.arrays.items()}
    for b in bound:
        for array in b.arrays:
            need[array] = max(need[array], b.window)
    return need

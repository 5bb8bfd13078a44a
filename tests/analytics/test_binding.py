"""Binding the contract's ``analytics`` to registered functions, before anything runs."""

from __future__ import annotations

from typing import Any

import pytest

from doreisa.analytics import BoundAnalytic, Feedback, Registry, bind_analytics, default_registry, windows_needed
from doreisa.contract import Contract
from doreisa.errors import AnalyticsError


def _contract(
    analytics: list[dict[str, Any]], *, sections: dict[str, Any] | None = None, **arrays: dict[str, Any]
) -> Contract:
    specs = arrays or {"t": {}, "p": {}}
    return Contract.model_validate(
        {
            "arrays": {name: {"dtype": "float64", "shape": [4], **extra} for name, extra in specs.items()},
            "analytics": analytics,
            **(sections or {}),
        }
    )


@pytest.fixture
def registry() -> Registry:
    registry = Registry()

    @registry.analytic
    def one(x, *, step, time):
        return ("one", x, step, time)

    @registry.analytic
    def two(a, b, *, scale: float = 1.0):
        return ("two", a, b, scale)

    @registry.analytic
    def needs(x, *, threshold):
        return ("needs", x, threshold)

    @registry.analytic("pair", window=2)
    def pair(x, *, steps, times):
        return ("pair", x, steps, times)

    @registry.analytic
    def steer(x, *, feedback, step):
        feedback.send(dt=0.5)
        return ("steer", x, step)

    return registry


def test_bind_positional(registry: Registry) -> None:
    [bound] = bind_analytics(_contract([{"function": "two", "arrays": ["t", "p"], "params": {"scale": 2}}]), registry)
    assert isinstance(bound, BoundAnalytic)
    assert bound.label == "two"
    assert bound.inputs == {"a": "t", "b": "p"}
    assert bound.arrays == ("t", "p")
    assert bound.window == 1
    assert bound.params == {"scale": 2}


def test_bind_by_parameter_name(registry: Registry) -> None:
    [bound] = bind_analytics(_contract([{"function": "two", "arrays": {"b": "t", "a": "p"}}]), registry)
    assert bound.inputs == {"a": "p", "b": "t"}  # in parameter order
    assert bound.arrays == ("p", "t")


def test_call_passes_arrays_params_and_context(registry: Registry) -> None:
    [one, two] = bind_analytics(
        _contract([{"function": "one", "arrays": ["t"]}, {"function": "two", "arrays": ["t", "p"]}]), registry
    )
    assert one.call({"t": "T"}, steps=[10], times=[0.5]) == ("one", "T", 10, 0.5)
    assert two.call({"t": "T", "p": "P"}, steps=[10], times=[None]) == ("two", "T", "P", 1.0)


def test_window_comes_from_the_registration_or_the_contract(registry: Registry) -> None:
    contract = _contract(
        [{"function": "pair", "arrays": ["t"]}, {"function": "pair", "name": "triple", "arrays": ["p"], "window": 3}]
    )
    pair, triple = bind_analytics(contract, registry)
    assert (pair.window, triple.window) == (2, 3)
    assert pair.call({"t": ["T0", "T1"]}, steps=[1, 2], times=[0.1, 0.2]) == ("pair", ["T0", "T1"], [1, 2], [0.1, 0.2])


def test_windows_needed(registry: Registry) -> None:
    contract = _contract(
        [{"function": "pair", "arrays": ["t"]}, {"function": "one", "arrays": ["p"]}],
        t={},
        p={},
        q={"window": 5},
    )
    bound = bind_analytics(contract, registry)
    assert windows_needed(contract, bound) == {"t": 2, "p": 1, "q": 5}


def test_windows_needed_takes_the_largest(registry: Registry) -> None:
    contract = _contract(
        [{"function": "pair", "arrays": ["t"]}, {"function": "pair", "name": "wide", "arrays": ["t"], "window": 4}],
        t={},
    )
    assert windows_needed(contract, bind_analytics(contract, registry)) == {"t": 4}


def test_no_analytics(registry: Registry) -> None:
    contract = _contract([])
    assert bind_analytics(contract, registry) == []
    assert windows_needed(contract, []) == {"t": 1, "p": 1}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"function": "two", "arrays": ["t"]}, r"1 arrays \['t'\] given but two takes 2 array parameters \['a', 'b'\]"),
        ({"function": "one", "arrays": ["t", "p"]}, r"2 arrays \['t', 'p'\] given but one takes 1"),
        ({"function": "two", "arrays": {"a": "t", "c": "p"}}, r"arrays maps parameters \['a', 'c'\] but two takes"),
        ({"function": "two", "arrays": {"a": "t"}}, r"arrays maps parameters \['a'\] but two takes \['a', 'b'\]"),
        ({"function": "one", "arrays": ["t"], "params": {"bins": 3}}, r"params \['bins'\] are not options of one"),
        ({"function": "needs", "arrays": ["t"]}, r"needs needs params \['threshold'\]; add them under params:"),
        (
            {"function": "nope", "arrays": ["t"]},
            r"'nope' is not registered; known: \['needs', 'one', 'pair', 'steer', 'two'\]",
        ),
    ],
    ids=[
        "too-few-arrays",
        "too-many-arrays",
        "unknown-parameter",
        "missing-parameter",
        "unknown-param",
        "missing-param",
        "unknown-function",
    ],
)
def test_binding_errors(registry: Registry, spec: dict[str, Any], match: str) -> None:
    with pytest.raises(AnalyticsError, match=match) as info:
        bind_analytics(_contract([spec]), registry)
    assert str(info.value).startswith("cannot bind the contract's analytics:\n  analytics[0] (")


def test_window_larger_than_the_array_keeps(registry: Registry) -> None:
    contract = _contract([{"function": "pair", "arrays": ["t"]}], t={"window": 1})
    with pytest.raises(AnalyticsError, match=r"window 2 is larger than arrays\.t\.window = 1; raise arrays\.t\.window"):
        bind_analytics(contract, registry)


def test_all_problems_are_reported_together(registry: Registry) -> None:
    contract = _contract(
        [
            {"function": "one", "arrays": ["t"]},  # fine
            {"function": "two", "arrays": ["t"]},
            {"function": "needs", "arrays": ["t"], "params": {"bins": 3}},
            {"function": "pair", "arrays": ["t", "p"]},
            {"function": "nope", "arrays": ["p"]},
        ],
        t={"window": 1},
        p={},
    )
    with pytest.raises(AnalyticsError) as info:
        bind_analytics(contract, registry)
    lines = str(info.value).splitlines()
    assert lines[0] == "cannot bind the contract's analytics:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "analytics[1] (two)",
        "analytics[2] (needs)",
        "analytics[3] (pair)",
        "analytics[4] (nope)",
    ]
    # Every problem of one entry is listed, not only the first.
    assert "params ['bins'] are not options of needs" in lines[2]
    assert "needs needs params ['threshold']" in lines[2]
    assert "2 arrays ['t', 'p'] given but pair takes 1" in lines[3]
    assert "window 2 is larger than arrays.t.window = 1" in lines[3]


def test_module_function_reference(registry: Registry) -> None:
    contract = _contract([{"function": "doreisa.analytics.builtins:maximum", "arrays": ["t"]}])
    [bound] = bind_analytics(contract, default_registry)
    assert bound.label == "maximum"
    assert bound.analytic.name == "max"  # the registered entry of that function


def test_binds_against_the_given_registry_only(registry: Registry) -> None:
    with pytest.raises(AnalyticsError, match="'mean' is not registered"):
        bind_analytics(_contract([{"function": "mean", "arrays": ["t"]}]), registry)
    bind_analytics(_contract([{"function": "mean", "arrays": ["t"]}]), default_registry)


# --- the feedback parameter

HOT = {"name": "hot", "when": "max(t) > 1", "action": {"cadence": {"every": 1}}}
MONITOR_T = {"array": "t", "reductions": ["max"]}


@pytest.mark.parametrize(
    "sections",
    [
        {},
        {"feedback": {"enabled": False}},
        {"feedback": {"mode": "deterministic", "lag": 3}},
        {"monitors": [MONITOR_T], "triggers": [HOT]},
    ],
    ids=["default", "disabled", "deterministic-not-enabled", "only-simulation-side-triggers"],
)
def test_feedback_parameter_needs_the_channel(registry: Registry, sections: dict[str, Any]) -> None:
    contract = _contract(
        [{"function": "one", "arrays": ["t"]}, {"function": "steer", "arrays": ["p"]}], sections=sections
    )
    assert not contract.uses_feedback
    with pytest.raises(
        AnalyticsError, match=r"steer takes 'feedback' but the contract's feedback channel is off"
    ) as info:
        bind_analytics(contract, registry)
    message = str(info.value)
    assert "analytics[1] (steer)" in message
    assert "add `feedback: {enabled: true}`" in message
    assert "analytics[0]" not in message


@pytest.mark.parametrize(
    "sections",
    [
        {"feedback": {"enabled": True}},
        {"feedback": {"mode": "deterministic", "lag": 3, "enabled": True}},
        {"triggers": [HOT]},
    ],
    ids=["enabled", "deterministic-enabled", "implied-by-an-analytics-side-trigger"],
)
def test_feedback_parameter_binds_with_the_channel(registry: Registry, sections: dict[str, Any]) -> None:
    contract = _contract([{"function": "steer", "arrays": ["t"]}], sections=sections)
    assert contract.uses_feedback
    [bound] = bind_analytics(contract, registry)
    assert bound.analytic.context == {"feedback", "step"}
    assert bound.analytic.options == {}


def test_call_passes_the_feedback_object(registry: Registry) -> None:
    [bound] = bind_analytics(
        _contract([{"function": "steer", "arrays": ["t"]}], sections={"feedback": {"enabled": True}}), registry
    )
    feedback = Feedback(frozenset({"t", "p"}))
    assert bound.call({"t": "T"}, steps=[7], times=[None], feedback=feedback) == ("steer", "T", 7)
    assert feedback.steering == {"dt": 0.5}


def test_analytics_without_feedback_do_not_receive_it(registry: Registry) -> None:
    [one] = bind_analytics(_contract([{"function": "one", "arrays": ["t"]}]), registry)
    assert one.call({"t": "T"}, steps=[3], times=[0.1], feedback=Feedback(frozenset({"t"}))) == ("one", "T", 3, 0.1)

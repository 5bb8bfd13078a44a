"""Monitors, feedback, and where each trigger is evaluated (simulation or analytics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from doreisa.contract import Contract, FeedbackPolicy, Monitor, Slice, parse_contract
from doreisa.errors import ContractError


def _contract(
    *,
    monitors: Sequence[dict[str, Any]] = (),
    triggers: Sequence[dict[str, Any]] = (),
    feedback: dict[str, Any] | None = None,
) -> Contract:
    return Contract.model_validate(
        {
            "arrays": {"t": {"dtype": "float64", "shape": [8, 6]}, "p": {"dtype": "float32", "shape": [4]}},
            "monitors": list(monitors),
            "triggers": list(triggers),
            **({"feedback": feedback} if feedback is not None else {}),
        }
    )


def _trigger(when: str, until: str | None = None, name: str = "hot") -> dict[str, Any]:
    trig: dict[str, Any] = {"name": name, "when": when, "action": {"cadence": {"every": 2}}}
    if until is not None:
        trig["until"] = until
    return trig


# --- monitors


def test_monitor_defaults() -> None:
    mon = Monitor.model_validate({"array": "t", "reductions": ["max"]})
    assert (mon.every, mon.select) == (1, None)
    assert mon.reductions == ("max",)


def test_monitor_with_every_and_select() -> None:
    contract = _contract(
        monitors=[{"array": "t", "reductions": ["min", "mean"], "every": 5, "select": [{}, {"step": 2}]}]
    )
    [mon] = contract.monitors
    assert mon.every == 5
    assert mon.select == (Slice(), Slice(step=2))


def test_monitored_pairs() -> None:
    contract = _contract(
        monitors=[{"array": "t", "reductions": ["max", "sum"]}, {"array": "p", "reductions": ["mean"], "every": 3}]
    )
    assert contract.monitored == {("max", "t"), ("sum", "t"), ("mean", "p")}
    assert _contract().monitored == frozenset()


@pytest.mark.parametrize(
    ("monitor", "match"),
    [
        ({"array": "q", "reductions": ["max"]}, r"monitors\[0\]\.array: unknown array 'q'; known arrays: p, t"),
        (
            {"array": "t", "reductions": ["std"]},
            r"reductions\.0\n.*Input should be 'max', 'min', 'sum', 'mean' or 'nonfinite'",
        ),
        ({"array": "t", "reductions": []}, r"reductions\n.*at least 1 item"),
        ({"array": "t", "reductions": ["max"], "every": 0}, r"every\n.*greater than 0"),
        ({"array": "t", "reductions": ["max"], "select": [{}]}, r"monitors\[0\]\.select: has 1 dims but 't' has 2"),
        (
            {"array": "t", "reductions": ["max"], "select": [{}, {"start": 2, "stop": 7}]},
            r"monitors\[0\]\.select\[1\]: 2:7 is outside dimension 1 of 't' \(size 6\) or empty",
        ),
        (
            {"array": "t", "reductions": ["max"], "select": [{"start": 8}, {}]},
            r"monitors\[0\]\.select\[0\]: 8:8 is outside dimension 0 of 't' \(size 8\) or empty",
        ),
    ],
    ids=["unknown-array", "bad-reduction", "no-reduction", "every-0", "select-ndim", "select-outside", "select-empty"],
)
def test_invalid_monitor(monitor: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        _contract(monitors=[monitor])


def test_monitor_unknown_array_in_a_file_names_key_and_line() -> None:
    text = "arrays:\n  t: {dtype: float64, shape: [4]}\nmonitors:\n  - array: t\n    reductions: [max]\n"
    text += "  - array: pressure\n    reductions: [min]\n"
    with pytest.raises(ContractError, match=r"c\.yaml:6:5: monitors\[1\]\.array: unknown array 'pressure'"):
        parse_contract(text, source="c.yaml")


# --- feedback


def test_feedback_values() -> None:
    fb = FeedbackPolicy.model_validate({"mode": "deterministic", "lag": 3, "sync_every": 4, "enabled": True})
    assert (fb.mode, fb.lag, fb.sync_every, fb.enabled) == ("deterministic", 3, 4, True)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"mode": "sync"}, r"mode\n.*Input should be 'async' or 'deterministic'"),
        ({"mode": "deterministic", "lag": 0}, r"lag\n.*greater than 0"),
        ({"lag": 1.5}, r"lag\n.*valid integer"),
        ({"sync_every": 0}, r"sync_every\n.*greater than 0"),
        ({"enabled": "sometimes"}, r"enabled\n.*valid boolean"),
        ({"lagg": 2}, r"lagg\n.*Extra inputs are not permitted"),
    ],
    ids=["bad-mode", "lag-0", "lag-float", "sync-every-0", "enabled-not-bool", "typo"],
)
def test_invalid_feedback(data: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        FeedbackPolicy.model_validate(data)


# --- where a trigger is evaluated


@pytest.mark.parametrize(
    ("monitors", "trigger", "in_simulation"),
    [
        ([{"array": "t", "reductions": ["max"]}], _trigger("max(t) > 1"), True),
        ([{"array": "t", "reductions": ["max"]}], _trigger("max(t) > 1 and step > 10"), True),
        ([{"array": "t", "reductions": ["max", "min"]}], _trigger("max(t) > 1", "min(t) < 0"), True),
        (
            [{"array": "t", "reductions": ["max"]}, {"array": "p", "reductions": ["mean"]}],
            _trigger("max(t) > mean(p)"),
            True,
        ),
        ([{"array": "t", "reductions": ["max"], "every": 10}], _trigger("max(t) > 1"), True),
        ([], _trigger("max(t) > 1"), False),
        ([{"array": "t", "reductions": ["max"]}], _trigger("max(t) > 1", "min(t) < 0"), False),
        ([{"array": "t", "reductions": ["min"]}], _trigger("max(t) > 1"), False),
        ([{"array": "p", "reductions": ["max"]}], _trigger("max(t) > 1"), False),
        ([{"array": "t", "reductions": ["max"]}], _trigger("max(t) > mean(p)"), False),
        ([{"array": "t", "reductions": ["max", "min", "sum", "mean"]}], _trigger("std(t) > 1"), False),
    ],
    ids=[
        "monitored",
        "monitored-and-step",
        "when-and-until-monitored",
        "two-arrays-monitored",
        "monitored-every-10",
        "no-monitor",
        "until-not-monitored",
        "other-reduction-monitored",
        "other-array-monitored",
        "one-of-two-arrays-monitored",
        "std-is-never-monitored",
    ],
)
def test_trigger_in_simulation(monitors: list[dict[str, Any]], trigger: dict[str, Any], in_simulation: bool) -> None:
    contract = _contract(monitors=monitors, triggers=[trigger])
    assert contract.trigger_in_simulation("hot") is in_simulation
    # A trigger the ranks evaluate needs no round trip; one the analytics evaluate needs the channel.
    assert contract.uses_feedback is (not in_simulation)


def test_trigger_in_simulation_is_per_trigger() -> None:
    contract = _contract(
        monitors=[{"array": "t", "reductions": ["max"]}],
        triggers=[_trigger("max(t) > 1", name="fast"), _trigger("min(t) < 0", name="slow")],
    )
    assert contract.trigger_in_simulation("fast")
    assert not contract.trigger_in_simulation("slow")
    assert contract.uses_feedback


# --- whether the feedback channel is used


@pytest.mark.parametrize(
    ("feedback", "uses"),
    [
        (None, False),
        ({"enabled": False}, False),
        ({"mode": "deterministic", "lag": 3}, False),
        ({"sync_every": 5}, False),
        ({"enabled": True}, True),
        ({"mode": "deterministic", "lag": 3, "enabled": True}, True),
    ],
)
def test_uses_feedback_without_triggers(feedback: dict[str, Any] | None, uses: bool) -> None:
    assert _contract(feedback=feedback).uses_feedback is uses


def test_simulation_side_trigger_with_the_channel_enabled() -> None:
    contract = _contract(
        monitors=[{"array": "t", "reductions": ["max"]}], triggers=[_trigger("max(t) > 1")], feedback={"enabled": True}
    )
    assert contract.trigger_in_simulation("hot")
    assert contract.uses_feedback

"""``doreisa.analytics.Feedback``: what an analytic may ask of the running simulation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from doreisa.analytics import Feedback
from doreisa.errors import AnalyticsError


@pytest.fixture
def feedback() -> Feedback:
    return Feedback(frozenset({"temperature", "pressure"}))


def test_empty_feedback_is_false(feedback: Feedback) -> None:
    assert not feedback
    assert (feedback.steering, feedback.cadence) == ({}, {})


def test_send_plain_values(feedback: Feedback) -> None:
    feedback.send(dt=0.5, iterations=3, scheme="rk4", adaptive=True)
    feedback.send(probes=[1, 2.5], dt=0.25)  # later values of a key win
    feedback.send(bounds=(0, 1))
    assert feedback.steering == {
        "dt": 0.25,
        "iterations": 3,
        "scheme": "rk4",
        "adaptive": True,
        "probes": [1, 2.5],
        "bounds": [0, 1],
    }
    assert feedback


@pytest.mark.parametrize(
    "value",
    [None, {"a": 1}, [1, None], np.arange(3), object()],
    ids=["none", "dict", "list-with-none", "ndarray", "object"],
)
def test_send_refuses_what_is_not_plain_data(feedback: Feedback, value: Any) -> None:
    with pytest.raises(AnalyticsError, match=r"feedback\.send\(x=\.\.\.\): .* is not plain data; send numbers"):
        feedback.send(x=value)
    assert feedback.steering == {}


def test_numpy_scalars_that_are_python_floats_are_accepted(feedback: Feedback) -> None:
    feedback.send(dt=np.float64(0.5))  # np.float64 subclasses float
    assert feedback.steering == {"dt": 0.5}


def test_set_cadence(feedback: Feedback) -> None:
    feedback.set_cadence("temperature", every=5)
    feedback.set_cadence("pressure", every_time=0.5, start=1.0, stop=9.0)
    assert feedback.cadence == {
        "temperature": {"every": 5, "start": 0.0},
        "pressure": {"every_time": 0.5, "start": 1.0, "stop": 9.0},
    }
    assert feedback


def test_set_cadence_unknown_array(feedback: Feedback) -> None:
    with pytest.raises(AnalyticsError, match=r"unknown array 'temp'; known: \['pressure', 'temperature'\]"):
        feedback.set_cadence("temp", every=5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of 'every'"),
        ({"every": 5, "every_time": 0.5}, "only one of 'every'"),
        ({"every": 0}, "greater than 0"),
        ({"every": 5, "start": 10, "stop": 2}, "use stop >= start"),
    ],
    ids=["neither", "both", "every-0", "stop-before-start"],
)
def test_set_cadence_invalid(feedback: Feedback, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(AnalyticsError, match=rf"(?s)feedback\.set_cadence\('temperature'\): .*{match}"):
        feedback.set_cadence("temperature", **kwargs)
    assert feedback.cadence == {}

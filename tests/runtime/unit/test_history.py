"""prev, delta and rate in triggers: the history a TriggerMachine keeps (pure logic, no Ray)."""

from __future__ import annotations

from doreisa.contract import parse_contract
from doreisa.runtime.triggers import TriggerMachine

CONTRACT = """
arrays:
  a: {dtype: float64, shape: [4]}
  b: {dtype: float64, shape: [4]}
triggers:
  - name: fast
    when: rate(max(a)) > 5
    until: delta(max(a)) < 0
    action: {cadence: {every: 1}}
  - name: both
    when: rate(max(a)) > 5 and max(b) > 0
    action: {cadence: {every: 2}}
"""
A, B = ("max", "a"), ("max", "b")


def test_rate_fires_on_a_fast_rise_and_delta_releases_it() -> None:
    machine = TriggerMachine(parse_contract(CONTRACT), ["fast"])
    assert machine.update({A: 0.0}, step=0, time=0.0) == [], "no history yet: not evaluated"
    assert machine.update({A: 1.0}, step=1, time=0.5) == [], "rate 2 per time unit"
    (on,) = machine.update({A: 11.0}, step=2, time=1.0)  # rate 20
    assert (on.name, on.active, on.step) == ("fast", True, 2)
    assert on.values == {"max(a)": 11.0, "prev(max(a))": 1.0}, "the provenance shows what the rate was made of"
    assert machine.update({A: 12.0}, step=3, time=1.5) == [], "until, not when: still active"
    (off,) = machine.update({A: 11.5}, step=4, time=2.0)
    assert (off.active, off.values) == (False, {"max(a)": 11.5, "prev(max(a))": 12.0})


def test_history_moves_only_with_fresh_values_and_their_own_time() -> None:
    """max(a) is monitored every 2 steps, max(b) every step: a's rate is over a's own evaluations."""
    machine = TriggerMachine(parse_contract(CONTRACT), ["both"])
    assert machine.update({A: 0.0, B: 1.0}, step=0, time=0.0) == []
    assert machine.update({A: 0.0, B: 1.0}, step=1, time=1.0, fresh=[B]) == [], "a not evaluated again: no history"
    (on,) = machine.update({A: 12.0, B: 1.0}, step=2, time=2.0)  # rate (12 - 0) / (2 - 0) = 6
    assert (on.name, on.active, on.values) == ("both", True, {"max(a)": 12.0, "max(b)": 1.0, "prev(max(a))": 0.0})
    # step 3: a is not evaluated; its rate is still 6, over its own times (0 and 2), not 12 / 3
    assert machine.update({A: 12.0, B: 2.0}, step=3, time=3.0, fresh=[B]) == []
    (off,) = machine.update({A: 13.0, B: 2.0}, step=4, time=4.0)  # (13 - 12) / (4 - 2)
    assert (off.active, off.values["prev(max(a))"]) == (False, 12.0)

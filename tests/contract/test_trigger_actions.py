"""A trigger's action: a cadence, analytics of its own (once or while active), or both; checked on load."""

from __future__ import annotations

import pytest

from doreisa.contract import parse_contract
from doreisa.errors import ContractError

BASE = """
arrays:
  t: {dtype: float64, shape: [4]}
analytics:
  - {function: max, arrays: [t]}
  - {function: mean, name: zoom, arrays: [t]}
triggers:
  - name: hot
    when: max(t) > 1
"""


def test_an_action_of_analytics_alone_is_valid_and_gates_them() -> None:
    contract = parse_contract(BASE + "    action: {analytics: [zoom], once: true}\n")
    (trigger,) = contract.triggers
    assert trigger.action.cadence is None and trigger.action.analytics == ("zoom",) and trigger.action.once
    assert contract.gated == {"zoom": [trigger]}, "max is not gated: it runs at every copied step"


@pytest.mark.parametrize(
    ("action", "says"),
    [
        ("{}", "an action needs a 'cadence', 'analytics', or both"),
        (
            "{analytics: [nope]}",
            "triggers[0].action.analytics[0]: unknown analytic 'nope'; the contract's analytics are named max, zoom",
        ),
        ("{cadence: {every: 1}, once: true}", "triggers[0].action.once: 'once' applies to the action's 'analytics'"),
        ("{analytics: [zoom], arrays: [t]}", "triggers[0].action.arrays: 'arrays' says whose cadence changes"),
    ],
)
def test_bad_actions_are_refused_naming_the_key(action: str, says: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_contract(BASE + f"    action: {action}\n")
    assert says in str(info.value)


def test_at_most_64_triggers_one_bit_each() -> None:
    many = "".join(f"  - {{name: t{i}, when: max(t) > {i}, action: {{analytics: [zoom]}}}}\n" for i in range(65))
    with pytest.raises(ContractError, match=r"triggers: .*at most 64"):
        parse_contract(BASE.split("triggers:")[0] + "triggers:\n" + many)

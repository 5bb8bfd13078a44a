"""``ranks:``: an array on a subset of the ranks, checked when the contract loads (#16, item 4)."""

from __future__ import annotations

import pytest

from doreisa.contract import parse_contract
from doreisa.errors import ContractError
from doreisa.runtime.plan import rank_plan

BASE = "arrays:\n  u: {dtype: float64, shape: [8, 8]}\n"


@pytest.mark.parametrize(
    ("given", "ranks"),
    [("[0, 2, 5]", (0, 2, 5)), ('"0-3"', (0, 1, 2, 3)), ('"1-2, 5, 7-8"', (1, 2, 5, 7, 8)), ('"4"', (4,))],
)
def test_ranks_as_a_list_or_ranges(given: str, ranks: tuple[int, ...]) -> None:
    contract = parse_contract(BASE + f"  p: {{dtype: float32, shape: [4], ranks: {given}}}\n")
    assert contract.arrays["p"].ranks == ranks
    assert rank_plan(contract).arrays["p"].ranks == ranks  # what the ranks run
    assert contract.arrays["u"].ranks is None


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ('"0-"', "ranks '0-': give ranks as a list, or ranges such as '0-3, 8'"),
        ('"3-1"', "ranks '3-1': give ranks as a list"),
        ('"1-2-3"', "ranks '1-2-3': give ranks as a list"),
        ("[2, 1]", "arrays.p.ranks: [2, 1]: list each rank once, in increasing order"),
        ("[1, 1]", "arrays.p.ranks: [1, 1]: list each rank once"),
        ("[-1]", "greater than or equal to 0"),
        ("[]", "at least 1 item"),
    ],
)
def test_bad_ranks_are_refused_naming_the_key(given: str, says: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_contract(BASE + f"  p: {{dtype: float32, shape: [4], ranks: {given}}}\n")
    assert says in str(info.value)
    assert ":3:" in str(info.value)  # the line of array p


def test_a_monitor_reads_an_array_every_rank_publishes() -> None:
    text = BASE + "  p: {dtype: float32, shape: [4], ranks: [0], finite: true}\n"
    with pytest.raises(ContractError, match=r"monitors\[0\]\.array: 'p' is published by ranks \[0\] only"):
        parse_contract(text)


def test_triggers_need_an_array_every_rank_publishes() -> None:
    text = (
        "arrays:\n  p: {dtype: float32, shape: [4], ranks: [0, 1]}\n"
        "triggers:\n  - {name: late, when: step > 10, action: {cadence: {every: 1}}}\n"
    )
    with pytest.raises(ContractError, match=r"arrays\.p\.ranks: every array is published by a subset of the ranks"):
        parse_contract(text)
    both = text.replace("arrays:\n", "arrays:\n  u: {dtype: float64, shape: [8]}\n")
    assert parse_contract(both).arrays["p"].ranks == (0, 1)


def test_a_view_takes_its_arrays_ranks() -> None:
    contract = parse_contract(
        BASE + "  p: {dtype: float32, shape: [4], ranks: [1, 3]}\n  z: {of: p, select: [{start: 2}]}\n"
    )
    assert contract.arrays["z"].ranks == (1, 3)
    with pytest.raises(ContractError, match=r"arrays\.z\.ranks: a view has the ranks of the array it views"):
        parse_contract(BASE + "  p: {dtype: float32, shape: [4], ranks: [1, 3]}\n  z: {of: p, ranks: [1]}\n")

"""Blocks against the object store's size, without Ray (cases B8 and L8 of docs/reliability.md)."""

from __future__ import annotations

from doreisa.runtime.store import StoreBudget, block_over_store, size

MiB = 2**20


def test_a_block_is_compared_with_the_fraction_of_the_store() -> None:
    assert block_over_store(3, "t", 40 * MiB, 100 * MiB, 0.5) is None
    assert block_over_store(3, "t", 50 * MiB, 100 * MiB, 0.5) is None, "at the fraction: fits"
    said = block_over_store(3, "t", 50 * MiB + 1, 100 * MiB, 0.5)
    assert said is not None and said.startswith("rank 3: a block of 't' is 50.0 MiB, over 0.5 of its node's")
    assert block_over_store(3, "t", 10**12, None, 0.5) is None, "a store of unknown size: no check"
    assert [size(1.5 * MiB), size(2048), size(3 * 2**30)] == ["1.5 MiB", "2.0 KiB", "3.0 GiB"]


def test_a_nodes_budget_counts_every_rank_and_the_steps_each_array_holds() -> None:
    # 4 steps in flight of 'a'; 'b' has a window of 3, so 4 + 3 - 1 steps of it can be held
    budget = StoreBudget(store_bytes=100 * MiB, fraction=0.8, held={"a": 4, "b": 6})
    assert budget.add("a", 0, 5 * MiB) is None  # 20 MiB
    assert budget.add("a", 1, 5 * MiB) is None  # 40 MiB
    assert budget.add("a", 1, 5 * MiB) is None, "a rank that opens again is counted once"
    assert budget.add("b", 0, 3 * MiB) is None  # 40 + 18 = 58 MiB
    said = budget.add("b", 1, 3 * MiB)  # 40 + 36 = 76 MiB: still under 80
    assert said is None
    said = budget.add("a", 2, 1 * MiB)  # 44 + 36 = 80 MiB: at the budget
    assert said is None
    said = budget.add("a", 3, 1 * MiB)  # 48 + 36 = 84 MiB
    assert said == (
        "the blocks of this node's 4 rank(s) in flight can reach 84.0 MiB ('a' 12.0 MiB x 4, 'b' 6.0 MiB x 6 steps), "
        "over 0.8 of its object store (100.0 MiB; backpressure.max_store_fraction): Ray will spill to disk before "
        "backpressure holds the simulation. Lower backpressure.max_in_flight (about 4 steps fit), copy less "
        "(select, preprocess) or give Ray a larger store (ray start --object-store-memory)"
    )
    assert budget.add("a", 4, 100 * MiB) is None, "said once per node"


def test_a_step_larger_than_the_budget_gets_no_max_in_flight_advice() -> None:
    budget = StoreBudget(store_bytes=10 * MiB, fraction=0.5, held={"a": 1})
    said = budget.add("a", 0, 6 * MiB)
    assert said is not None and "max_in_flight" not in said
    assert said.endswith("Copy less (select, preprocess) or give Ray a larger store (ray start --object-store-memory)")
    assert StoreBudget(store_bytes=None, fraction=0.5, held={}).add("a", 0, 10**12) is None

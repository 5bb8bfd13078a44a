"""Cutting a task graph into per-node parts (pure logic, no Ray)."""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping

import pytest

from doreisa.runtime.scheduling.partition import Part, partition

MiB = 1 << 20


def by_node_round(parts: list[Part]) -> dict[tuple[str | None, int], tuple[Hashable, ...]]:
    return {(p.node, p.round): p.keys for p in parts}


def test_a_reduction_runs_one_part_per_node_then_one_combine() -> None:
    deps = {"c0": ["a0"], "c1": ["a1"], "c2": ["b0"], "agg": ["c0", "c1", "c2"]}
    leaves = {"a0": "A", "a1": "A", "b0": "B"}
    parts = partition(deps, leaves, ["agg"], leaf_bytes=dict.fromkeys(leaves, MiB))
    assert [(p.node, p.round) for p in parts] == [("A", 0), ("B", 0), ("A", 1)]
    a0, b0, a1 = parts
    assert set(a0.keys) == {"c0", "c1"} and set(a0.exports) == {"c0", "c1"} and set(a0.leaves) == {"a0", "a1"}
    assert b0.keys == ("c2",) and b0.exports == ("c2",) and b0.leaves == ("b0",)
    assert a1.keys == ("agg",) and set(a1.inputs) == {"c0", "c1", "c2"} and a1.exports == ("agg",)
    assert a1.leaves == ()


def test_a_stencil_ships_halo_strips_and_never_a_block() -> None:
    # 3 blocks in a row on 3 nodes; each block's stencil reads its own block and a strip of each neighbour
    nodes = {"x0": "A", "x1": "B", "x2": "C"}
    deps: dict[str, list[str]] = {}
    for i in range(3):
        for j in (i - 1, i + 1):
            if 0 <= j < 3:
                deps[f"strip{j}->{i}"] = [f"x{j}"]
        deps[f"stencil{i}"] = [f"x{i}", *(f"strip{j}->{i}" for j in (i - 1, i + 1) if 0 <= j < 3)]
    parts = partition(deps, nodes, [f"stencil{i}" for i in range(3)], leaf_bytes=dict.fromkeys(nodes, 8 * MiB))
    where = {key: p.node for p in parts for key in p.keys}
    assert [where[f"stencil{i}"] for i in range(3)] == ["A", "B", "C"], "each stencil runs next to its block"
    assert where["strip1->0"] == "B" and where["strip0->1"] == "A", "a strip is cut where its block is"
    exported = {key for p in parts for key in p.exports}
    assert exported == set(deps), "strips travel to their readers' parts; stencils are the results"
    assert not exported & set(nodes), "no block is ever a part's result"
    for p in parts:
        assert all(nodes[leaf] == p.node for leaf in p.leaves), "a part reads only its own node's blocks"


def test_blocks_outweigh_small_results() -> None:
    # one 8 MiB block on A against two small results from B: the task goes to A
    deps = {"r1": ["b1"], "r2": ["b2"], "t": ["a", "r1", "r2"]}
    leaves = {"a": "A", "b1": "B", "b2": "B"}
    parts = partition(deps, leaves, ["t"], leaf_bytes={"a": 8 * MiB, "b1": 8 * MiB, "b2": 8 * MiB})
    assert {key: p.node for p in parts for key in p.keys}["t"] == "A"


def test_inline_weights_place_fused_tasks() -> None:
    parts = partition({"f": [], "g": ["f"]}, {}, ["g"], inline_weights={"f": {"B": 100, "A": 10}})
    assert by_node_round(parts) == {("B", 0): ("f", "g")}


def test_ties_go_to_the_smallest_node_id() -> None:
    deps = {"c0": ["a"], "c1": ["b"], "agg": ["c0", "c1"]}
    parts = partition(deps, {"a": "node-b", "b": "node-a"}, ["agg"])
    assert {key: p.node for p in parts for key in p.keys}["agg"] == "node-a"


def test_tasks_that_read_nothing_placed_go_with_their_readers() -> None:
    deps = {"const": [], "t": ["a", "const"], "other": ["const2"], "const2": []}
    parts = partition(deps, {"a": "A"}, ["t", "other"])
    assert by_node_round(parts) == {("A", 0): ("const", "t"), (None, 0): ("const2", "other")}


def test_a_wanted_block_needs_no_part() -> None:
    assert partition({}, {"a": "A"}, ["a"]) == []


def test_unknown_inputs_and_cycles_are_errors() -> None:
    with pytest.raises(ValueError, match="reads 'nowhere', which is neither a task nor a block"):
        partition({"t": ["nowhere"]}, {}, ["t"])
    with pytest.raises(ValueError, match="cycle through 'u', 'v'"):
        partition({"u": ["v"], "v": ["u"], "w": []}, {}, ["w"])


def check_valid(parts: list[Part], deps: Mapping[str, list[str]], leaves: Mapping[str, str], wanted: set[str]) -> None:
    """Every task in one part; parts run in order; every input is some earlier part's export."""
    seen: dict[Hashable, int] = {}
    for i, p in enumerate(parts):
        for key in p.keys:
            assert key not in seen
            seen[key] = i
    assert set(seen) == set(deps)
    exported: set[Hashable] = set()
    for i, p in enumerate(parts):
        done: set[Hashable] = set()
        for key in p.keys:
            for d in deps[key]:
                if d in leaves:
                    assert d in p.leaves
                elif seen[d] == i:
                    assert d in done, "a part's tasks are in dependency order"
                else:
                    assert seen[d] < i and d in exported and d in p.inputs
            done.add(key)
        exported |= set(p.exports)
    assert wanted - set(leaves) <= exported


@pytest.mark.parametrize("seed", range(30))
def test_random_graphs_cut_into_valid_parts(seed: int) -> None:
    rng = random.Random(seed)
    leaves = {f"b{i}": rng.choice("ABCD") for i in range(rng.randint(1, 12))}
    deps: dict[str, list[str]] = {}
    for i in range(rng.randint(1, 40)):
        pool = list(leaves) + list(deps)
        deps[f"t{i}"] = rng.sample(pool, rng.randint(0, min(3, len(pool))))
    wanted = set(rng.sample(list(deps), rng.randint(1, len(deps))))
    parts = partition(deps, leaves, wanted, leaf_bytes={k: rng.randint(1, 100) for k in leaves})
    check_valid(parts, deps, leaves, wanted)
    # only what leaves a part becomes an object: never more than the tasks, fewer parts than tasks
    assert len(parts) <= len(deps)

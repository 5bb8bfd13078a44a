"""Placeholder arrays: every step builds the same graph; binding gives each its blocks (no Ray)."""

from __future__ import annotations

import pickle
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
from dask.base import tokenize

from doreisa.runtime.scheduling.graphs import Block, Position, bind, bound, current, placeholder_array

CHUNKS = ((2, 2), (3,))


def _step(value: float, parts: dict[tuple[int, ...], int] | None = None) -> tuple[da.Array, dict[Any, Any]]:
    blocks: dict[tuple[int, ...], Any] = {(0, 0): np.full((2, 3), value), (1, 0): np.full((2, 3), value + 1)}
    if parts:  # both blocks stored in one object
        blocks = {(0, 0): [blocks[(0, 0)], blocks[(1, 0)]], (1, 0): [blocks[(0, 0)], blocks[(1, 0)]]}
    return placeholder_array("doreisa-t-0", CHUNKS, "float64", blocks, parts)


def _compute(value: Any, bindings: dict[Any, Any]) -> Any:
    (out,) = dask.compute(value, scheduler=lambda dsk, keys, **kw: dask.get(bind(dsk, bindings), keys))
    return out


def test_two_steps_build_the_same_graph_and_compute_their_own_blocks() -> None:
    x0, bound0 = _step(1.0)
    x1, bound1 = _step(10.0)
    y0, y1 = (x0 * 2 + 1).sum(axis=0), (x1 * 2 + 1).sum(axis=0)
    assert x0.name == x1.name and tokenize(y0) == tokenize(y1), "the same analytic: the same Dask names"
    assert bound0.keys() == bound1.keys()
    np.testing.assert_array_equal(_compute(y0, bound0), [16.0, 16.0, 16.0])  # 2 rows of 2*1+1, 2 rows of 2*2+1
    np.testing.assert_array_equal(_compute(y1, bound1), [88.0, 88.0, 88.0])


def test_another_shape_is_another_graph() -> None:
    x, _ = _step(1.0)
    wider, _ = placeholder_array("doreisa-t-0", ((2, 2), (4,)), "float64", {(0, 0): 0, (1, 0): 0})
    other_type, _ = placeholder_array("doreisa-t-0", CHUNKS, "float32", {(0, 0): 0, (1, 0): 0})
    assert len({x.name, wider.name, other_type.name}) == 3
    assert x.name.startswith("doreisa-t-0-")


def test_blocks_stored_together_give_the_same_graph_and_are_taken_out_of_their_object() -> None:
    alone, alone_bound = _step(1.0)
    together, together_bound = _step(1.0, parts={(0, 0): 0, (1, 0): 1})
    assert together.name == alone.name and tokenize(together.sum()) == tokenize(alone.sum())
    expected = np.repeat([1.0, 2.0], 6).reshape(4, 3)
    np.testing.assert_array_equal(_compute(together, together_bound), expected)
    np.testing.assert_array_equal(_compute(alone, alone_bound), expected)
    assert {together_bound[p] for p in together_bound if isinstance(p, Position)} == {0, 1}
    assert {alone_bound[p] for p in alone_bound if isinstance(p, Position)} == {None}


def test_a_missing_binding_names_the_placeholder() -> None:
    x, bound = _step(1.0)
    bound.pop(next(iter(bound)))
    with pytest.raises(KeyError, match=r"nothing bound to Block\(\('doreisa-t-0-\w+', 0, 0\)\)"):
        _compute(x.sum(), bound)


def test_a_placeholder_is_known_by_its_kind_and_key() -> None:
    block = Block(("a", 1))
    assert block == Block(("a", 1)) != Block(("a", 2))
    assert block != Position(("a", 1))
    assert tokenize(block) == tokenize(Block(("a", 1))) != tokenize(Block(("a", 2)))
    assert tokenize(block) != tokenize(Position(("a", 1)))
    assert pickle.loads(pickle.dumps(block)) == block
    assert len({block, Block(("a", 1)), Position(("a", 1))}) == 2


def test_inside_an_analytic_call_a_placeholder_gives_its_block() -> None:
    _, bindings = _step(1.0)
    block = next(iter(bindings))
    with bound(bindings):
        assert current(Block(block.key)) is bindings[block]
        assert current("not a placeholder") == "not a placeholder"
    with pytest.raises(KeyError, match="only inside an analytic call"):
        current(block)


def test_a_placeholder_array_computed_outside_its_call_says_so() -> None:
    x, _ = _step(1.0)
    with pytest.raises(RuntimeError, match="can be computed only in the analytic call, in its thread"):
        x.sum().compute(scheduler="sync")

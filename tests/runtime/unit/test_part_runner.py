"""Running one part's Dask tasks in a worker, and swapping blocks in task definitions (no Ray)."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from doreisa.runtime.scheduling._dask import DataNode, Task, TaskRef
from doreisa.runtime.scheduling.cuts import Slot
from doreisa.runtime.scheduling.graphs import KEEP, collect, substitute
from doreisa.runtime.scheduling.parts import run_part


def test_run_part_runs_in_order_and_returns_only_the_exports() -> None:
    tasks = {
        "double": Task("double", operator.mul, TaskRef("block"), 2),
        "total": Task("total", np.sum, TaskRef("double")),
        "plus": Task("plus", operator.add, TaskRef("total"), TaskRef("other")),
    }
    block = np.arange(4.0)
    assert run_part(tasks, ("block", "other"), ("plus",), block, 10.0) == 22.0
    assert run_part(tasks, ("block", "other"), ("double", "plus"), block, 1.0)[1] == 13.0


def test_run_part_fills_slots_with_the_extra_inputs() -> None:
    # a block Dask fused into a task's definition travels as a top-level argument
    tasks = {"s": Task("s", np.sum, DataNode(None, Slot(1)))}
    assert run_part(tasks, ("unused",), ("s",), 0, np.ones(5)) == 5.0


def test_substitute_replaces_nested_values_without_touching_the_original() -> None:
    marker = object()
    inner = Task("inner", operator.add, DataNode(None, marker), 1)
    outer = Task("outer", sum, [DataNode(None, {"k": (marker, 2)}), inner])

    def swap(x: Any) -> Any:
        return 40 if x is marker else KEEP

    new = substitute({"outer": outer, "inner": inner}, swap)
    assert new["inner"]({}) == 41
    assert new["inner"] is not inner and inner.args[0].value is marker, "the original is left alone"
    untouched = Task("t", operator.neg, 3)
    assert substitute(untouched, swap) is untouched


class _Ref:
    """Stands for a Ray object reference."""


def test_collect_finds_every_reference_in_order_as_substitute_walks() -> None:
    a, b, c, d = _Ref(), _Ref(), _Ref(), _Ref()
    fused = {"x": Task("x", operator.add, DataNode(None, c), 1)}  # a fused subgraph
    task = Task("t", sum, [DataNode(None, {"k": (a, 2)}), b, DataNode(None, fused)], key=d)
    seen: list[Any] = []

    def note(x: Any) -> Any:
        if isinstance(x, _Ref):
            seen.append(x)
        return KEEP

    substitute(task, note)
    assert collect(task, (_Ref,)) == seen == [a, b, c, d]
    assert collect(Task("plain", operator.neg, 3), (_Ref,)) == []
    deep: Any = a
    for _ in range(20):  # deeper than any Dask task nests: not walked
        deep = [deep]
    assert collect(Task("deep", len, deep), (_Ref,)) == []

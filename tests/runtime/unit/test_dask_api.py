"""The private Dask API doreisa relies on (runtime/scheduling/_dask.py), checked name by name.

A Dask release that renames or changes one of these fails here, with the name, before it
fails an analytic at run time. When it does: adapt _dask.py and its users, then raise the
version bound in pyproject.toml.
"""

from __future__ import annotations

import ast
import copy
import operator
from pathlib import Path

import dask
import dask.array as da
import numpy as np

import doreisa
from doreisa.runtime.scheduling import _dask
from doreisa.runtime.scheduling._dask import Alias, DataNode, Task, TaskRef, convert_legacy_graph


def test_dask_is_within_the_tested_versions() -> None:
    major = int(dask.__version__.split(".")[0])
    assert 2025 <= major < 2027, f"dask {dask.__version__} is outside the versions _dask.py was checked with"


def test_legacy_tuples_become_tasks_with_their_parts() -> None:
    graph = convert_legacy_graph({"a": 1, "b": (operator.add, "a", 10), "c": (sum, ["a", "b"]), "d": "b"})
    a, b, c, d = (graph[k] for k in "abcd")
    assert isinstance(a, DataNode) and a.value == 1
    assert isinstance(b, Task) and b.func is operator.add and set(b.dependencies) == {"a"}
    assert isinstance(c, Task) and set(c.dependencies) == {"a", "b"}
    assert isinstance(d, Alias) and set(d.dependencies) == {"b"}
    values: dict[object, object] = {"a": 1}
    values["b"] = b(values)
    values["c"] = c(values)
    assert (values["b"], values["c"]) == (11, 12)


def test_a_task_keeps_its_arguments_and_keywords_where_doreisa_reads_them() -> None:
    task = Task("k", np.full, (2,), fill_value=TaskRef("v"))
    assert task.func is np.full and task.args == ((2,),)
    assert isinstance(task.kwargs["fill_value"], TaskRef) and set(task.dependencies) == {"v"}
    np.testing.assert_array_equal(task({"v": 7}), [7, 7])


def test_a_copied_task_with_new_arguments_computes_them_and_leaves_the_original() -> None:
    # graphs.substitute: copy.copy(task), then set args (and kwargs) on the clone
    task = Task("k", operator.mul, TaskRef("x"), 3)
    clone = copy.copy(task)
    clone.args = (TaskRef("x"), 5)  # type: ignore[misc]
    assert (task({"x": 2}), clone({"x": 2})) == (6, 10)
    assert task.args[1] == 3


def test_a_dask_array_graph_is_made_of_these_classes() -> None:
    x = da.ones((4, 4), chunks=2).sum()
    graph = convert_legacy_graph(dict(x.__dask_graph__()))
    kinds = {type(t) for t in graph.values()}
    assert kinds <= {Task, DataNode, Alias}, kinds
    assert Task in kinds


def test_only_one_module_imports_the_private_api() -> None:
    package = Path(doreisa.__file__).parent
    found = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [(path.name, n) for n in names if n.startswith("dask._")]
    assert found == [(Path(_dask.__file__).name, "dask._task_spec")]

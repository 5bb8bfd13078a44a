"""Task graphs over a step's blocks: placeholders that give every step the same graph, and walks.

An analytic builds a new Dask graph at every step, and cutting it into per-node parts costs
about 20 µs per task (Dask's own materialisation about as much again): 100-170 ms for a sum
of 1,024 blocks. Yet each step's graph is the same but for its blocks. So the driver hands
analytics arrays whose blocks are :class:`Block` placeholders, named after the array, its
place in the analytic's window and its layout (chunks, dtype), never after the step. Dask
names every computation after its inputs (``tokenize``) and a placeholder is known by its
key alone: the same analytic then builds the same graph under the same names at every step,
and :func:`doreisa.runtime.scheduler.partitioned_get` cuts it once, binding the placeholders
to each step's blocks (``bindings``: placeholder key -> block).

A scheduler that does not know placeholders gets the graph through :func:`bind`.

Pure logic: no Ray.
"""

from __future__ import annotations

import contextlib
import copy as copy_module
import math
import operator
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

Key = Hashable
#: What a walk's ``swap`` returns to leave a value as it is.
KEEP = object()
_DEPTH = 16  # fused subgraphs nest Task -> DataNode -> dict -> Task -> ...
_ATOMS = frozenset({int, float, str, bytes, bool, type(None), slice})
_current = threading.local()


class Block:
    """Stands for one block of a step inside a graph; known by its key alone.

    Two placeholders with the same key are the same block for Dask (``tokenize``), whatever
    step they stand for: that is what makes successive steps build the same graph.
    """

    __slots__ = ("key",)

    def __init__(self, key: Key) -> None:
        self.key = key

    def __dask_tokenize__(self) -> Any:
        return ("doreisa.Block", self.key)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Block, (self.key,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and other.key == self.key

    def __hash__(self) -> int:
        return hash(("doreisa.Block", self.key))

    def __repr__(self) -> str:
        return f"Block({self.key!r})"


def blocks_array(
    name: str,
    chunks: Sequence[Sequence[int]],
    dtype: Any,
    blocks: Mapping[tuple[int, ...], Any],
    parts: Mapping[tuple[int, ...], int] | None = None,
) -> da.Array:
    """A Dask array named ``name`` whose chunks are ``blocks`` (index -> value).

    ``parts``: blocks stored with others in one object, and their position there; such a
    block is a task that takes it out of the object (it runs where the object is).
    """
    chunks = tuple(tuple(c) for c in chunks)
    parts = parts or {}
    graph = {
        (name, *index): block if index not in parts else (operator.getitem, block, parts[index])
        for index, block in blocks.items()
    }
    expected = math.prod(len(c) for c in chunks)
    if len(graph) != expected:
        raise ValueError(f"{name}: {len(graph)} blocks for a grid of {expected}")
    return da.Array(graph, name, chunks=chunks, dtype=np.dtype(dtype))  # pyright: ignore[reportCallIssue]


def placeholder_array(
    prefix: str,
    chunks: Sequence[Sequence[int]],
    dtype: Any,
    blocks: Mapping[tuple[int, ...], Any],
    parts: Mapping[tuple[int, ...], int] | None = None,
) -> tuple[da.Array, dict[Key, Any]]:
    """:func:`blocks_array` over :class:`Block` placeholders, and their bindings (key -> block).

    The name is ``prefix`` and a hash of the layout (chunks, dtype, blocks stored together):
    steps of one layout build the same graph, another layout never shares it.
    """
    chunks = tuple(tuple(c) for c in chunks)
    layout = sorted((parts or {}).items())
    name = f"{prefix}-{tokenize(chunks, np.dtype(dtype).str, layout)}"
    bindings: dict[Key, Any] = {(name, *index): block for index, block in blocks.items()}
    array = blocks_array(name, chunks, dtype, {index: Block((name, *index)) for index in blocks}, parts)
    return array, bindings


@contextlib.contextmanager
def bound(bindings: Mapping[Key, Any]) -> Iterator[None]:
    """Within, in this thread: the blocks behind the placeholders are ``bindings`` (see :func:`current`).

    The driver holds it around each analytic call.
    """
    previous = getattr(_current, "bindings", None)
    _current.bindings = bindings
    try:
        yield
    finally:
        _current.bindings = previous


def current(value: Any) -> Any:
    """``value``, or the block bound to it if it is a placeholder (inside :func:`bound`)."""
    if type(value) is not Block:
        return value
    bindings = getattr(_current, "bindings", None) or {}
    if value.key not in bindings:
        raise KeyError(f"no block bound to the placeholder {value.key!r} here (only inside an analytic call)")
    return bindings[value.key]


def bind(dsk: Any, bindings: Mapping[Key, Any]) -> dict[Key, Any]:
    """The tasks of ``dsk`` (a graph, or what ``dask.compute`` hands a scheduler) with placeholders bound.

    Raises ``KeyError`` naming a placeholder that ``bindings`` lacks.
    """
    from dask._task_spec import convert_legacy_graph

    if not isinstance(dsk, Mapping):
        dsk = dsk.__dask_graph__()
    graph = convert_legacy_graph(dict(dsk))

    def swap(x: Any) -> Any:
        if type(x) is Block:
            if x.key not in bindings:
                raise KeyError(f"no block bound to the placeholder {x.key!r}")
            return bindings[x.key]
        return KEEP

    return {key: substitute(task, swap) for key, task in graph.items()}


def substitute(obj: Any, swap: Callable[[Any], Any], depth: int = 0) -> Any:
    """``obj`` with every ``x`` for which ``swap(x)`` is not :data:`KEEP` replaced by ``swap(x)``.

    Walks what a Dask task holds: arguments, keyword arguments, data nodes, fused subgraphs
    (dicts of tasks), lists and tuples. Returns ``obj`` itself when nothing changed; never
    modifies it.
    """
    from dask._task_spec import DataNode, Task

    kind = type(obj)
    if kind in _ATOMS or depth > _DEPTH:
        return obj
    if kind is dict:
        items = {k: substitute(v, swap, depth + 1) for k, v in obj.items()}
        return items if any(items[k] is not v for k, v in obj.items()) else obj
    if kind is list or kind is tuple:
        seq = [substitute(v, swap, depth + 1) for v in obj]
        if all(a is b for a, b in zip(seq, obj, strict=True)):
            return obj
        return seq if kind is list else tuple(seq)
    if isinstance(obj, Task):
        args = substitute(obj.args, swap, depth + 1)
        kwargs = substitute(obj.kwargs, swap, depth + 1) if obj.kwargs else obj.kwargs
        if args is obj.args and kwargs is obj.kwargs:
            return obj
        clone = copy_module.copy(obj)
        clone.args, clone.kwargs = args, kwargs
        return clone
    if isinstance(obj, DataNode):
        value = substitute(obj.value, swap, depth + 1)
        return obj if value is obj.value else DataNode(obj.key, value)
    new = swap(obj)
    return obj if new is KEEP else new


def collect(obj: Any, kinds: tuple[type, ...]) -> list[Any]:
    """The values of the types ``kinds`` inside a task, in the order :func:`substitute` meets them.

    The same walk, without building anything: it runs over every task of every graph, most
    of which hold none.
    """
    from dask._task_spec import DataNode, Task

    found: list[Any] = []
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        x, depth = stack.pop()
        kind = type(x)
        if kind in _ATOMS or depth > _DEPTH:
            continue
        if kind is dict:
            inner: Any = x.values()
        elif kind is list or kind is tuple:
            inner = x
        elif isinstance(x, Task):
            inner = (x.args, x.kwargs) if x.kwargs else (x.args,)
        elif isinstance(x, DataNode):
            inner = (x.value,)
        else:
            if isinstance(x, kinds):
                found.append(x)
            continue
        stack.extend((v, depth + 1) for v in reversed(list(inner)))
    return found

"""Task graphs over a step's blocks: placeholders that give every step the same graph, and walks.

An analytic builds a new Dask graph at every step, and building and cutting it into per-node
parts costs a fixed time per task: for a large graph, more than the analytics' own work
(figures in docs/performance.md). Yet each step's
graph is the same but for its blocks. So the driver hands analytics arrays whose blocks are
placeholders (:class:`Block`: the object holding a block, :class:`Position`: where the
block is in it), named after the array, its place in the analytic's window, its chunks and
dtype, never after the step. Dask names every computation after its inputs (``tokenize``)
and a placeholder is known by its key alone: the same analytic then builds the same graph
under the same names at every step, and :func:`doreisa.runtime.scheduling.scheduler.partitioned_get`
cuts it once, binding the placeholders to each step's values (``bindings``: placeholder ->
value). Whether a node stored a block alone or with others is in the bindings too, so it
does not change the graph.

A scheduler that does not know placeholders gets the graph through :func:`bind`.

Pure logic: no Ray."""

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


class Placeholder:
    """Stands for a value of a step inside a graph; known by its kind and key alone.

    Two placeholders of the same kind and key are the same value for Dask (``tokenize``),
    whatever step they stand for: that is what makes successive steps build the same graph.
    A mapping of bindings is keyed by the placeholders themselves.
    """

    __slots__ = ("key",)

    def __init__(self, key: Key) -> None:
        self.key = key

    def __dask_tokenize__(self) -> Any:
        return (type(self).__name__, self.key)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key,))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.key == self.key  # pyright: ignore[reportAttributeAccessIssue]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.key))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r})"


class Block(Placeholder):
    """The object that holds a block: the block itself, or the several blocks a node stored together."""


class Position(Placeholder):
    """Where the block is in its object: None (the object is the block) or its index in the object."""


def take(obj: Any, position: int | None) -> Any:
    """The block in ``obj`` at ``position`` (None: ``obj`` is the block)."""
    if isinstance(obj, Placeholder):
        raise RuntimeError(
            f"{obj!r} was computed with nothing bound to it: an analytic's arrays can be computed only in "
            "the analytic call, in its thread (not in a thread it starts, nor after it returns)"
        )
    return obj if position is None else obj[position]


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
    parts = parts or {}
    graph: dict[Key, Any] = {
        (name, *index): block if index not in parts else (operator.getitem, block, parts[index])
        for index, block in blocks.items()
    }
    return _array(name, chunks, dtype, graph)


def _array(name: str, chunks: Sequence[Sequence[int]], dtype: Any, graph: dict[Key, Any]) -> da.Array:
    chunks = tuple(tuple(c) for c in chunks)
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
) -> tuple[da.Array, dict[Placeholder, Any]]:
    """:func:`blocks_array` over placeholders, and their bindings (placeholder -> value).

    Each block is a :func:`take` task of a :class:`Block` and a :class:`Position`, so whether
    a node stored it alone or with others (``parts``) is in the bindings, not in the graph.
    The name is ``prefix`` and a hash of the chunks and dtype: steps of one shape build the
    same graph, another shape never shares it.
    """
    chunks = tuple(tuple(c) for c in chunks)
    name = f"{prefix}-{tokenize(chunks, np.dtype(dtype).str)}"
    parts = parts or {}
    graph: dict[Key, Any] = {}
    bindings: dict[Placeholder, Any] = {}
    for index, block in blocks.items():
        key = (name, *index)
        graph[key] = (take, Block(key), Position(key))
        bindings[Block(key)] = block
        bindings[Position(key)] = parts.get(index)
    return _array(name, chunks, dtype, graph), bindings


@contextlib.contextmanager
def bound(bindings: Mapping[Placeholder, Any]) -> Iterator[None]:
    """Within, in this thread: the blocks behind the placeholders are ``bindings`` (see :func:`current`).

    The driver holds it around each analytic call.
    """
    previous = getattr(_current, "bindings", None)
    _current.bindings = bindings
    try:
        yield
    finally:
        _current.bindings = previous


def resolve(value: Any, bindings: Mapping[Placeholder, Any], where: str = "") -> Any:
    """``value``, or what ``bindings`` binds to it if it is a placeholder (``KeyError`` if nothing)."""
    if not isinstance(value, Placeholder):
        return value
    if value not in bindings:
        raise KeyError(f"nothing bound to {value!r}{where}")
    return bindings[value]


def current(value: Any) -> Any:
    """``value``, or what is bound to it if it is a placeholder (inside :func:`bound`)."""
    return resolve(value, getattr(_current, "bindings", None) or {}, " here (only inside an analytic call)")


def bind(dsk: Any, bindings: Mapping[Placeholder, Any]) -> dict[Key, Any]:
    """The tasks of ``dsk`` (a graph, or what ``dask.compute`` hands a scheduler) with placeholders bound.

    Raises ``KeyError`` naming a placeholder that ``bindings`` lacks.
    """
    from doreisa.runtime.scheduling._dask import convert_legacy_graph

    if not isinstance(dsk, Mapping):
        dsk = dsk.__dask_graph__()
    graph = convert_legacy_graph(dict(dsk))

    def swap(x: Any) -> Any:
        return resolve(x, bindings) if isinstance(x, Placeholder) else KEEP

    return {key: substitute(task, swap) for key, task in graph.items()}


def substitute(obj: Any, swap: Callable[[Any], Any], depth: int = 0) -> Any:
    """``obj`` with every ``x`` for which ``swap(x)`` is not :data:`KEEP` replaced by ``swap(x)``.

    Walks what a Dask task holds: arguments, keyword arguments, data nodes, fused subgraphs
    (dicts of tasks), lists and tuples. Returns ``obj`` itself when nothing changed; never
    modifies it.
    """
    from doreisa.runtime.scheduling._dask import DataNode, Task

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
    from doreisa.runtime.scheduling._dask import DataNode, Task

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

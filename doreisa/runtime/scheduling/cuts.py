"""Cutting a task graph into per-node parts, once, and keeping the cuts (what a step reuses).

:func:`cut_graph` reads the graph's blocks (object references, or placeholders bound at each
step), the tasks the wanted keys need and the blocks fused into them, partitions the tasks by
node (:func:`doreisa.runtime.scheduling.partition.partition`) and prepares each part's tasks
to be sent. :class:`Cuts` keeps the cuts of placeholder graphs, the same at every step.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from doreisa.runtime.scheduling.graphs import KEEP, Block, Placeholder, Position, collect, substitute, take
from doreisa.runtime.scheduling.partition import Part, partition

Key = Hashable


@dataclass
class Cut:
    """A graph cut into parts, each part's tasks ready to send."""

    wanted: list[Key]  # the keys it was cut for
    leaves: dict[Key, Any]  # block key -> object reference or Block placeholder
    positions: dict[Key, Position]  # block key -> its Position placeholder, for blocks taken out of an object
    tasks: int
    parts: list[Part]
    prepared: list[tuple[dict[Key, Any], tuple[Key, ...], list[Any]]]  # per part: see _prepare
    reusable: bool  # every block is a placeholder: the cut holds no step's data
    stored: list[Any] = field(default_factory=list[Any])  # per part: its tasks in the object store, once kept


class Lru:
    """The latest ``items`` values, and no more than ``weight`` in all (the newest is always kept)."""

    def __init__(self, items: int, weight: int, weigh: Callable[[Any], int]) -> None:
        self.items, self.weight, self._weigh = items, weight, weigh
        self._values: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()
        self._total = 0

    def get(self, key: Hashable) -> Any:
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if key in self._values:
            self._total -= self._weigh(self._values.pop(key))
        self._values[key] = value
        self._total += self._weigh(value)
        while len(self._values) > 1 and (len(self._values) > self.items or self._total > self.weight):
            self._total -= self._weigh(self._values.popitem(last=False)[1])

    def clear(self) -> None:
        self._values.clear()
        self._total = 0

    def __len__(self) -> int:
        return len(self._values)


class Cuts:
    """Cut graphs by signature and block placement, for :func:`partitioned_get`.

    The ``size`` latest are kept, and no more than ``tasks`` Dask tasks in all. Safe to share
    between threads (an abandoned analytic may still be running).
    """

    def __init__(self, size: int = 32, tasks: int = 500_000) -> None:
        self.hits = 0
        self.misses = 0
        self._cuts = Lru(size, tasks, lambda cut: cut.tasks)
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Cut | None:
        """The cut stored under ``key``, if any (counted as a hit or a miss)."""
        with self._lock:
            cut = self._cuts.get(key)
            if cut is None:
                self.misses += 1
            else:
                self.hits += 1
            return cut

    def put(self, key: Hashable, cut: Cut) -> None:
        """Keep ``cut``; forget the least recently used ones beyond the bounds."""
        with self._lock:
            self._cuts.put(key, cut)

    def clear(self) -> None:
        """Forget every cut (and free the tasks they keep in the object store)."""
        with self._lock:
            self._cuts.clear()

    def __len__(self) -> int:
        return len(self._cuts)


def cut_graph(
    dsk: Any,
    wanted: list[Key],
    leaf_nodes: Mapping[str, str],
    sizes: Mapping[str, int],
    resolve: Callable[[Any], Any],
    ref_type: type,
) -> Cut:
    """The graph's blocks (key -> a reference or a Block placeholder) and the Position of those
    taken out of an object, its tasks and the blocks and placeholders inside each, cut into parts
    whose tasks are ready to send."""
    from doreisa.runtime.scheduling._dask import Alias, DataNode, Task, convert_legacy_graph

    if not isinstance(dsk, Mapping):
        dsk = dsk.__dask_graph__()
    graph = convert_legacy_graph(dict(dsk))
    leaves: dict[Key, Any] = {}
    positions: dict[Key, Position] = {}
    for key, task in graph.items():
        if isinstance(task, DataNode) and isinstance(task.value, (ref_type, Block)):
            leaves[key] = task.value
        elif isinstance(task, Task) and task.func is take and [type(a) for a in task.args] == [Block, Position]:
            # a placeholder array's block: a block too (read where its object is, never a task of its own)
            leaves[key], positions[key] = task.args
    _follow_aliases(graph, leaves, positions, Alias)
    tasks = _needed({key: task for key, task in graph.items() if key not in leaves}, wanted)
    embedded = {key: collect(task, (ref_type, Placeholder)) for key, task in tasks.items()}  # blocks in tasks
    inline: dict[Key, dict[str, int]] = {}
    for key, found in embedded.items():
        for token in found:
            if not isinstance(value := resolve(token), ref_type):
                continue  # a Position
            ref = value.hex()
            if (where := leaf_nodes.get(ref)) is not None:
                weights = inline.setdefault(key, {})
                weights[where] = weights.get(where, 0) + sizes.get(ref, 1)
    hexes = {key: resolve(token).hex() for key, token in leaves.items()}
    parts = partition(
        {key: task.dependencies for key, task in tasks.items()},
        {key: leaf_nodes.get(h) for key, h in hexes.items()},
        wanted,
        leaf_bytes={key: sizes.get(h, 1) for key, h in hexes.items()},
        inline_weights=inline,
    )
    prepared = [_prepare(part, tasks, embedded, (ref_type, Placeholder)) for part in parts]
    tokens = [*leaves.values(), *(t for found in embedded.values() for t in found)]
    reusable = all(isinstance(t, Placeholder) for t in tokens)
    return Cut(wanted, leaves, positions, len(tasks), parts, prepared, reusable)


def _needed(tasks: Mapping[Key, Any], wanted: list[Key]) -> dict[Key, Any]:
    """The tasks that ``wanted`` needs (a graph Dask did not optimise holds every task of its layers)."""
    seen: set[Key] = set()
    stack = [k for k in wanted if k in tasks]
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        stack.extend(d for d in tasks[key].dependencies if d in tasks and d not in seen)
    return {key: task for key, task in tasks.items() if key in seen}


def _prepare(
    part: Part, tasks: Mapping[Key, Any], embedded: Mapping[Key, list[Any]], kinds: tuple[type, ...]
) -> tuple[dict[Key, Any], tuple[Key, ...], list[Any]]:
    """A part's tasks with the blocks fused into them replaced by slots; its named inputs; those
    blocks (references or placeholders), each once."""
    named = part.leaves + part.inputs
    fused = list(dict.fromkeys(token for k in part.keys for token in embedded[k]))
    slots = {token: Slot(len(named) + i) for i, token in enumerate(fused)}

    def to_slot(x: Any) -> Any:
        return slots[x] if isinstance(x, kinds) else KEEP

    body = {k: substitute(tasks[k], to_slot) if embedded[k] else tasks[k] for k in part.keys}
    return body, named, fused


def _follow_aliases(
    graph: Mapping[Key, Any], leaves: dict[Key, Any], positions: dict[Key, Position], alias_type: type
) -> None:
    # An Alias of a block is the same block, at the same position in the same object.
    changed = True
    while changed:
        changed = False
        for key, task in graph.items():
            if key not in leaves and isinstance(task, alias_type):
                (target,) = task.dependencies
                if target in leaves:
                    leaves[key] = leaves[target]
                    if target in positions:
                        positions[key] = positions[target]
                    changed = True


@dataclass(frozen=True, slots=True)
class Slot:
    """Stands for the part's ``index``-th input inside a task definition (a block Dask fused in)."""

    index: int

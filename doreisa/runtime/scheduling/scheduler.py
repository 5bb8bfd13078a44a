"""Dask-on-Ray by node: each node runs its part of the graph as one Ray task, next to its blocks.

Ray's stock ``ray_dask_get`` (what doreisa 0.3 and deisa-ray use) submits one Ray task per
Dask task from the driver, and lets Ray's locality preference decide where it runs: when the
node holding a block is busy, the task may run elsewhere and pull the whole block.
doreisa knows where every block lives (the node actor that owns it), so
:func:`partitioned_get` cuts the graph with :func:`doreisa.runtime.scheduling.partition.partition` and
submits one Ray task per (node, round) part, with a *soft* affinity to that node (if the
node is gone, Ray runs it elsewhere; derived data is never hard-pinned). Inside, the part's
tasks run one after the other, like Dask's synchronous scheduler; intermediate results that
no other part reads never become Ray objects.

A reduction of 1,024 blocks on 16 nodes costs 31 Ray tasks instead of more than 1,000.

Building a graph's tasks and cutting them costs about 40 µs per task, paid at every step. A
graph over :mod:`~doreisa.runtime.scheduling.graphs` placeholders is the same at every step:
:class:`Plans` keeps its cut, and later steps only bind the placeholders to their blocks
and send the parts.
"""

from __future__ import annotations

import collections
import functools
import threading
import time
from collections.abc import Callable, Hashable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, cast

from doreisa.runtime.scheduling.graphs import KEEP, Block, Placeholder, Position, collect, resolve, substitute, take
from doreisa.runtime.scheduling.partition import Part, partition

Key = Hashable
#: A graph that is one part on the caller's node reading at most this many bytes runs in the caller.
LOCAL_BYTES = 1 << 20


def partitioned_get(
    dsk: Any,
    keys: Any,
    *,
    leaf_nodes: Mapping[str, str],
    leaf_bytes: Mapping[str, int] | None = None,
    bindings: Mapping[Placeholder, Any] | None = None,
    plans: Plans | None = None,
    signature: Hashable | None = None,
    ray_remote_args: Mapping[str, Any] | None = None,
    record: MutableMapping[str, Any] | None = None,
    local_bytes: int = LOCAL_BYTES,
    **kwargs: Any,
) -> Any:
    """Dask ``get`` that runs each node's part of the graph as one Ray task on that node.

    Parameters
    ----------
    dsk, keys
        What Dask passes to a scheduler.
    leaf_nodes, leaf_bytes : mapping
        Node and size of each block, keyed by its object reference id (``ref.hex()``).
    bindings : mapping, optional
        The value of each placeholder in the graph (:mod:`doreisa.runtime.scheduling.graphs`): an
        object reference for a ``Block``, None or an index for a ``Position``.
    plans, signature : optional
        Reuse of cut graphs: ``signature`` is what Dask's ``tokenize`` says of the collections
        computed (the same analytic on blocks of the same shape at another step gives the same
        one). A graph whose blocks are all placeholders is cut once per signature and nodes
        of its blocks; later calls bind the placeholders to their blocks and send the parts,
        without building the graph's tasks again.
    ray_remote_args : mapping, optional
        Options of every Ray task (e.g. the analytics nodes' resource, in transit).
    record : mutable mapping, optional
        Receives ``tasks`` (Dask tasks), ``parts`` (Ray tasks), ``nodes``, ``local``,
        ``moved_bytes`` (bytes of the parts' results read on another node), ``plan_s``
        (seconds spent building the graph's tasks and cutting them into parts, or finding
        that cut in ``plans``) and ``reused`` (whether the cut came from ``plans``).
    local_bytes : int
        A graph that is a single part on this process's node, reading at most this many
        bytes of blocks, runs here: a Ray task would cost more than the work (a few ms
        against a few hundred µs for a small step). 0: always a Ray task.
    """
    import ray
    from dask.core import flatten
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    started = time.perf_counter()
    sizes = leaf_bytes or {}
    bound = bindings or {}
    wanted: list[Key] = list(flatten(keys))

    def bound_to(token: Any) -> Any:
        """A block's object reference, or what is bound to a placeholder."""
        return resolve(token, bound)

    def arguments(
        values: Mapping[Key, Any], named: tuple[Key, ...], fused: list[Any]
    ) -> tuple[list[Any], dict[Key, Any] | None]:
        """A part's inputs, and the position of those that are blocks stored with others in an object."""
        inputs = [values[k] for k in named] + [bound_to(t) for t in fused]
        return inputs, {k: positions[k] for k in named if k in positions} or None

    plan, reused = _find_plan(dsk, wanted, leaf_nodes, sizes, bound_to, bound, plans, signature)
    named_as = dict(zip(plan.wanted, wanted, strict=True))  # a reused cut's keys stand for this call's
    blocks = {k: bound_to(token) for k, token in plan.leaves.items()}
    positions = {k: p for k, token in plan.positions.items() if (p := bound_to(token)) is not None}
    parts = plan.parts
    if len(parts) == 1 and parts[0].node in (ray.get_runtime_context().get_node_id(), None):
        part, (body, named, fused) = parts[0], plan.prepared[0]
        inputs, mine = arguments(blocks, named, fused)
        objects = {x.hex(): x for x in inputs if isinstance(x, ray.ObjectRef)}
        if sum(sizes.get(h, local_bytes + 1) for h in objects) <= local_bytes:
            plan_s = time.perf_counter() - started
            fetched = dict(zip(objects.values(), ray.get(list(objects.values())), strict=True))
            values = [fetched[x] if isinstance(x, ray.ObjectRef) else x for x in inputs]
            done = _by_key(part.exports, _run_part(body, named, part.exports, *values, positions=mine))
            alone = [k for k in plan.wanted if k not in done]  # blocks wanted as they are
            got = ray.get([blocks[k] for k in alone])
            done.update((k, take(v, positions.get(k))) for k, v in zip(alone, got, strict=True))
            if record is not None:
                record.update(tasks=plan.tasks, parts=1, nodes=1, local=True, moved_bytes=0)
                record.update(plan_s=plan_s, reused=reused)
            return _repack(keys, {named_as[k]: v for k, v in done.items() if k in named_as})

    refs: dict[Key, Any] = dict(blocks)
    base = dict(ray_remote_args or {})
    plan_s = time.perf_counter() - started
    for i, (part, (body, named, fused)) in enumerate(zip(parts, plan.prepared, strict=True)):
        options = dict(base, num_returns=max(1, len(part.exports)), name=f"doreisa:part:{part.round}")
        if part.node is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(part.node, soft=True)
        # every block and input is a top-level argument: Ray fetches them before the part starts
        inputs, mine = arguments(refs, named, fused)
        sent = _Stored(plan.stored[i]) if plan.stored else body  # a reused cut's tasks are on the nodes already
        out = _run_part_remote().options(**options).remote(sent, named, part.exports, *inputs, positions=mine)
        refs.update(_by_key(part.exports, out))
    got = ray.get([refs[k] for k in plan.wanted])
    values = {new: take(v, positions.get(k)) for new, k, v in zip(wanted, plan.wanted, got, strict=True)}
    if record is not None:
        _record(record, parts, plan.tasks, refs)
        record.update(plan_s=plan_s, reused=reused)
    return _repack(keys, values)


@dataclass
class _Plan:
    """A graph cut into parts, each part's tasks ready to send."""

    wanted: list[Key]  # the keys it was cut for
    leaves: dict[Key, Any]  # block key -> object reference or Block placeholder
    positions: dict[Key, Position]  # block key -> its Position placeholder, for blocks taken out of an object
    tasks: int
    parts: list[Part]
    prepared: list[tuple[dict[Key, Any], tuple[Key, ...], list[Any]]]  # per part: see _prepare
    reusable: bool  # every block is a placeholder: the cut holds no step's data
    stored: list[Any] = field(default_factory=list[Any])  # per part: its tasks in the object store, once kept


class _Lru:
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


class Plans:
    """Cut graphs by signature and block placement, for :func:`partitioned_get`.

    The ``size`` latest are kept, and no more than ``tasks`` Dask tasks in all. Safe to share
    between threads (an abandoned analytic may still be running).
    """

    def __init__(self, size: int = 32, tasks: int = 500_000) -> None:
        self.hits = 0
        self.misses = 0
        self._plans = _Lru(size, tasks, lambda plan: plan.tasks)
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> _Plan | None:
        """The plan stored under ``key``, if any (counted as a hit or a miss)."""
        with self._lock:
            plan = self._plans.get(key)
            if plan is None:
                self.misses += 1
            else:
                self.hits += 1
            return plan

    def put(self, key: Hashable, plan: _Plan) -> None:
        """Keep ``plan``; forget the least recently used ones beyond the bounds."""
        with self._lock:
            self._plans.put(key, plan)

    def clear(self) -> None:
        """Forget every plan (and free the tasks they keep in the object store)."""
        with self._lock:
            self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)


def _find_plan(
    dsk: Any,
    wanted: list[Key],
    leaf_nodes: Mapping[str, str],
    sizes: Mapping[str, int],
    resolve: Callable[[Any], Any],
    bound: Mapping[Placeholder, Any],
    plans: Plans | None,
    signature: Hashable | None,
) -> tuple[_Plan, bool]:
    """The cut of ``dsk``: from ``plans`` (True) or made now (False, and kept when it can be reused)."""
    import ray

    if plans is None or signature is None:
        return _plan(dsk, wanted, leaf_nodes, sizes, resolve, ray.ObjectRef), False
    # the nodes of the blocks, not their objects' sizes: a block stored alone at one step and
    # with others at the next is read on the same node by the same task
    placement = frozenset((k, leaf_nodes.get(v.hex())) for k, v in bound.items() if type(k) is Block)  # any order
    key = (signature, len(wanted), placement)
    if (plan := plans.get(key)) is not None:
        return plan, True
    plan = _plan(dsk, wanted, leaf_nodes, sizes, resolve, ray.ObjectRef)
    if plan.reusable:
        # sent once; each worker keeps the tasks it has run (see _tasks_of), later steps send a reference
        plan.stored = [ray.put(body) for body, _, _ in plan.prepared]
        plans.put(key, plan)
    return plan, False


def _plan(
    dsk: Any,
    wanted: list[Key],
    leaf_nodes: Mapping[str, str],
    sizes: Mapping[str, int],
    resolve: Callable[[Any], Any],
    ref_type: type,
) -> _Plan:
    """The graph's blocks (key -> a reference or a Block placeholder) and the Position of those
    taken out of an object, its tasks and the blocks and placeholders inside each, cut into parts
    whose tasks are ready to send."""
    from dask._task_spec import Alias, DataNode, Task, convert_legacy_graph

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
    return _Plan(wanted, leaves, positions, len(tasks), parts, prepared, reusable)


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
    slots = {token: _Slot(len(named) + i) for i, token in enumerate(fused)}

    def to_slot(x: Any) -> Any:
        return slots[x] if isinstance(x, kinds) else KEEP

    body = {k: substitute(tasks[k], to_slot) if embedded[k] else tasks[k] for k in part.keys}
    return body, named, fused


def _by_key(exports: tuple[Key, ...], out: Any) -> dict[Key, Any]:
    """What :func:`_run_part` returned (one value, or a tuple of several), by export key."""
    return dict(zip(exports, out if len(exports) > 1 else [out], strict=True))


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


def _record(record: MutableMapping[str, Any], parts: list[Part], tasks: int, refs: Mapping[Key, Any]) -> None:
    """What one computation cost: Dask tasks, parts (Ray tasks), nodes, bytes sent between nodes.

    ``moved_bytes`` adds, for every result of a part, its size times the number of other
    nodes that read it (other parts, or the caller's node for the results). Ray keeps results
    under 100 KiB out of the object stores (they travel inside task messages), so their
    size is that of their serialised value.
    """
    import ray
    from ray import cloudpickle

    producer = {k: p.node for p in parts for k in p.exports}
    readers: dict[Key, set[str | None]] = {k: set() for k in producer}
    for p in parts:
        for k in p.inputs:
            readers[k].add(p.node)
    here = ray.get_runtime_context().get_node_id()
    for nodes in readers.values():
        if not nodes:
            nodes.add(here)  # read by no part: a result for the caller
    crossing = [k for k, nodes in readers.items() if nodes - {producer[k]}]
    located = object_locations([refs[k] for k in crossing])
    moved = 0
    for k in crossing:
        info = located.get(refs[k], {})
        size = info.get("object_size") if info.get("node_ids") else None
        if not size:
            size = len(cloudpickle.dumps(ray.get(refs[k])))  # pyright: ignore[reportPrivateImportUsage]
        moved += size * len(readers[k] - {producer[k]})
    record.update(tasks=tasks, parts=len(parts), nodes=len({p.node for p in parts}), local=False, moved_bytes=moved)


def object_locations(refs: list[Any]) -> dict[Any, dict[str, Any]]:
    """``ray.experimental.get_object_locations``, one reference per call.

    In Ray 2.60 one call with references of several owners can abort the process
    (``std::future_error: Promise already satisfied`` in ``CoreWorker::GetLocationFromOwner``:
    the call counts its per-owner requests while it sends them, so an early reply ends it
    and a later one aborts). One reference per call has a single owner.
    """
    import ray.experimental

    out: dict[Any, dict[str, Any]] = {}
    for ref in refs:
        out.update(ray.experimental.get_object_locations([ref]))
    return out


def _repack(keys: Any, values: Mapping[Key, Any]) -> Any:
    if isinstance(keys, list):
        return [_repack(k, values) for k in keys]  # pyright: ignore[reportUnknownVariableType]
    return values[keys]


@functools.cache
def _run_part_remote() -> Any:
    import ray

    return ray.remote(_run_part)


def _run_part(
    tasks: dict[Key, Any] | _Stored,
    input_keys: tuple[Key, ...],
    exports: tuple[Key, ...],
    *inputs: Any,
    positions: Mapping[Key, int] | None = None,
) -> Any:
    """Run one part's tasks in order (inside a Ray worker on the part's node).

    ``inputs`` are the values of ``input_keys``, then the values that the tasks hold as
    :class:`_Slot` markers (blocks Dask fused into the tasks' definitions, placeholders).
    ``positions``: the inputs that are blocks stored with others in one object, and their
    index in it.
    """

    def from_slot(x: Any) -> Any:
        return inputs[x.index] if isinstance(x, _Slot) else KEEP

    tasks = _tasks_of(tasks)

    values: dict[Key, Any] = dict(zip(input_keys, inputs, strict=False))
    for key, position in (positions or {}).items():
        values[key] = values[key][position]
    if len(inputs) > len(input_keys):
        tasks = {key: substitute(task, from_slot) for key, task in tasks.items()}
    remaining: dict[Key, int] = {}
    for task in tasks.values():
        for dep in task.dependencies:
            remaining[dep] = remaining.get(dep, 0) + 1
    keep = set(exports)
    for key, task in tasks.items():
        values[key] = task(values)
        for dep in task.dependencies:  # free what no later task of this part reads
            remaining[dep] -= 1
            if remaining[dep] == 0 and dep not in keep:
                values.pop(dep, None)
    if len(exports) == 1:
        return values[exports[0]]
    return tuple(values[k] for k in exports)


@dataclass(frozen=True, slots=True)
class _Stored:
    """A part's tasks in the object store (a cut reused from step to step): fetched once per worker."""

    ref: Any


#: In each worker: the stored parts' tasks it has run, by reference id (the 64 latest parts, 500,000 tasks).
_TASKS = _Lru(64, 500_000, len)


def _tasks_of(tasks: dict[Key, Any] | _Stored) -> dict[Key, Any]:
    if not isinstance(tasks, _Stored):
        return tasks
    key = tasks.ref.hex()
    found: dict[Key, Any] | None = _TASKS.get(key)
    if found is None:
        import ray

        found = cast(dict[Key, Any], ray.get(tasks.ref))
        _TASKS.put(key, found)
    return found


@dataclass(frozen=True, slots=True)
class _Slot:
    """Stands for the part's ``index``-th input inside a task definition (a block Dask fused in)."""

    index: int

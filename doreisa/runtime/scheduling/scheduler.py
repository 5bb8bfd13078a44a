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

A sum of 1,024 blocks on 16 nodes is 31 Ray tasks instead of 3,072, one per task of Dask's
graph (the scaling benchmark, docs/performance.md).

Building a graph's tasks and cutting them costs a fixed time per task, paid at every step: for
a large graph, more than the analytics' own work (figures in docs/performance.md). A graph
over :mod:`~doreisa.runtime.scheduling.graphs` placeholders is the same at every step:
:class:`Cuts` keeps its cut, and later steps only bind the placeholders to their blocks and
send the parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, MutableMapping
from typing import Any

from doreisa.runtime.scheduling.cuts import Cut, Cuts, cut_graph
from doreisa.runtime.scheduling.graphs import Block, Placeholder, resolve, take
from doreisa.runtime.scheduling.partition import Part
from doreisa.runtime.scheduling.parts import Stored, by_key, run_part, run_part_remote

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
    cuts: Cuts | None = None,
    signature: Hashable | None = None,
    ray_remote_args: Mapping[str, Any] | None = None,
    record: MutableMapping[str, Any] | None = None,
    local_bytes: int = LOCAL_BYTES,
    device: str = "cpu",
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
    cuts, signature : optional
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
        that cut in ``cuts``) and ``reused`` (whether the cut came from ``cuts``).
    local_bytes : int
        A graph that is a single part on this process's node, reading at most this many
        bytes of blocks, runs here: starting a Ray task costs more than such work (figures in
        docs/performance.md). 0: always a Ray task.
    device : {"cpu", "gpu"}
        ``gpu``: every part runs its tasks on CuPy arrays (``placement.device``; give
        ``num_gpus`` in ``ray_remote_args``) and never in this process.
    """
    import ray
    from dask.core import flatten

    started = time.perf_counter()
    sizes, bound = leaf_bytes or {}, bindings or {}
    wanted: list[Key] = list(flatten(keys))
    cut, reused = _find_cut(dsk, wanted, leaf_nodes, sizes, lambda t: resolve(t, bound), bound, cuts, signature)
    call = _BoundCut(cut, bound)
    plan_s = time.perf_counter() - started
    here = ray.get_runtime_context().get_node_id()
    alone = len(cut.parts) == 1 and cut.parts[0].node in (here, None) and device == "cpu"
    values = call.run_here(sizes, local_bytes) if alone else None
    if values is not None:
        if record is not None:
            record.update(tasks=cut.tasks, parts=1, nodes=1, local=True, moved_bytes=0)
    else:
        values, refs = call.run_on_nodes(ray_remote_args or {}, device)
        if record is not None:
            _record(record, cut.parts, cut.tasks, refs)
    if record is not None:
        record.update(plan_s=plan_s, reused=reused)
    return _repack(keys, {new: values[k] for new, k in zip(wanted, cut.wanted, strict=True)})


class _BoundCut:
    """A cut with this call's blocks: what each part reads, and where the results come from."""

    def __init__(self, cut: Cut, bound: Mapping[Placeholder, Any]) -> None:
        self.cut, self._bound = cut, bound
        self.blocks = {k: resolve(token, bound) for k, token in cut.leaves.items()}
        self.positions = {k: p for k, token in cut.positions.items() if (p := resolve(token, bound)) is not None}

    def arguments(
        self, values: Mapping[Key, Any], named: tuple[Key, ...], fused: list[Any]
    ) -> tuple[list[Any], dict[Key, Any] | None]:
        """A part's inputs, and the position of those that are blocks stored with others in an object."""
        inputs = [values[k] for k in named] + [resolve(t, self._bound) for t in fused]
        return inputs, {k: self.positions[k] for k in named if k in self.positions} or None

    def run_here(self, sizes: Mapping[str, int], local_bytes: int) -> dict[Key, Any] | None:
        """The wanted values, computed in this process; None when the part reads more than ``local_bytes``."""
        import ray

        part, (body, named, fused) = self.cut.parts[0], self.cut.prepared[0]
        inputs, mine = self.arguments(self.blocks, named, fused)
        objects = {x.hex(): x for x in inputs if isinstance(x, ray.ObjectRef)}
        if sum(sizes.get(h, local_bytes + 1) for h in objects) > local_bytes:
            return None
        fetched = dict(zip(objects.values(), ray.get(list(objects.values())), strict=True))
        values = [fetched[x] if isinstance(x, ray.ObjectRef) else x for x in inputs]
        done = by_key(part.exports, run_part(body, named, part.exports, *values, positions=mine))
        alone = [k for k in self.cut.wanted if k not in done]  # blocks wanted as they are
        got = ray.get([self.blocks[k] for k in alone])
        done.update((k, take(v, self.positions.get(k))) for k, v in zip(alone, got, strict=True))
        return done

    def run_on_nodes(
        self, remote_args: Mapping[str, Any], device: str = "cpu"
    ) -> tuple[dict[Key, Any], dict[Key, Any]]:
        """The wanted values, each part a Ray task next to its blocks; and every result's reference."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cut, refs = self.cut, dict(self.blocks)
        for i, (part, (body, named, fused)) in enumerate(zip(cut.parts, cut.prepared, strict=True)):
            options = dict(remote_args, num_returns=max(1, len(part.exports)), name=f"doreisa:part:{part.round}")
            if part.node is not None:
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(part.node, soft=True)
            # every block and input is a top-level argument: Ray fetches them before the part starts
            inputs, mine = self.arguments(refs, named, fused)
            sent = Stored(cut.stored[i]) if cut.stored else body  # a reused cut's tasks are on the nodes already
            out = (
                run_part_remote()
                .options(**options)
                .remote(sent, named, part.exports, *inputs, positions=mine, device=device)
            )
            refs.update(by_key(part.exports, out))
        got = ray.get([refs[k] for k in cut.wanted])
        return {k: take(v, self.positions.get(k)) for k, v in zip(cut.wanted, got, strict=True)}, refs


def _find_cut(
    dsk: Any,
    wanted: list[Key],
    leaf_nodes: Mapping[str, str],
    sizes: Mapping[str, int],
    resolve: Callable[[Any], Any],
    bound: Mapping[Placeholder, Any],
    cuts: Cuts | None,
    signature: Hashable | None,
) -> tuple[Cut, bool]:
    """The cut of ``dsk``: from ``cuts`` (True) or made now (False, and kept when it can be reused)."""
    import ray

    if cuts is None or signature is None:
        return cut_graph(dsk, wanted, leaf_nodes, sizes, resolve, ray.ObjectRef), False
    # the nodes of the blocks, not their objects' sizes: a block stored alone at one step and
    # with others at the next is read on the same node by the same task
    placement = frozenset((k, leaf_nodes.get(v.hex())) for k, v in bound.items() if type(k) is Block)  # any order
    key = (signature, len(wanted), placement)
    if (cut := cuts.get(key)) is not None:
        return cut, True
    cut = cut_graph(dsk, wanted, leaf_nodes, sizes, resolve, ray.ObjectRef)
    if cut.reusable:
        # sent once; each worker keeps the tasks it has run (see _tasks_of), later steps send a reference
        cut.stored = [ray.put(body) for body, _, _ in cut.prepared]
        cuts.put(key, cut)
    return cut, False


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

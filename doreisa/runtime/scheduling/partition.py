"""Cut a task graph into per-node parts: one Ray task per node and round, not one per Dask task.

A central Dask-on-Ray scheduler submits one Ray task per Dask task: for a reduction of
1,024 blocks that is 3,072 submissions, object references and result objects, all
through the driver (doreisa 0.3's study measured a head actor saturating at about 3,000
references per second). doreisa knows where every block lives, so it cuts the graph by node:

* every task gets the node holding most of the bytes it reads (blocks weigh their size,
  results of other tasks weigh 1, as they are usually much smaller: chunk sums, halo strips);
  a task that reads nothing placed goes with the tasks that read it;
* a task's *round* is the largest round of its inputs, plus one for an input computed on
  another node; blocks are inputs of every round;
* the tasks of one (node, round) pair form a :class:`Part`, run by one Ray task on that node
  in topological order (a local, sequential Dask ``get``). Only the results that another part
  reads (or that the caller wants) leave it, each as its own object: a stencil ships the few
  halo rows another node needs, never a whole block.

Every input of a part comes from a block or from a part of an earlier round (or the same
node's earlier round), so running parts by increasing round never waits on a later part.

Pure logic, tested without Ray; :mod:`doreisa.runtime.scheduling.scheduler` runs the parts.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

Key = Hashable


@dataclass(frozen=True)
class Part:
    """The tasks of one node and round, run as one Ray task.

    Attributes
    ----------
    node : str or None
        The node to run on (``None``: no block anywhere below; Ray chooses).
    round : int
        Parts of round ``r`` read blocks and results of rounds ``< r`` (or of their own).
    keys : tuple
        Its tasks, in an order where every task comes after the tasks it reads.
    leaves : tuple
        The blocks it reads.
    inputs : tuple
        The results of other parts it reads.
    exports : tuple
        Its results that other parts read or the caller wants, in a fixed order.
    """

    node: str | None
    round: int
    keys: tuple[Key, ...]
    leaves: tuple[Key, ...]
    inputs: tuple[Key, ...]
    exports: tuple[Key, ...]


def partition(
    dependencies: Mapping[Key, Iterable[Key]],
    leaf_nodes: Mapping[Key, str | None],
    wanted: Iterable[Key],
    *,
    leaf_bytes: Mapping[Key, int] | None = None,
    inline_weights: Mapping[Key, Mapping[str, int]] | None = None,
) -> list[Part]:
    """The parts of a graph, ordered so that a part comes after every part it reads.

    Parameters
    ----------
    dependencies : mapping
        For each task (not the blocks), the keys it reads: blocks or other tasks.
    leaf_nodes : mapping
        For each block key, the node that holds it (``None``: unknown).
    wanted : iterable
        Keys the caller wants back (tasks or blocks).
    leaf_bytes : mapping, optional
        Size of each block (missing: 1).
    inline_weights : mapping, optional
        For a task with blocks embedded in its definition (Dask fuses small graphs), the bytes
        it reads on each node.

    Returns
    -------
    list of Part
    """
    deps = {key: tuple(d for d in ds if d != key) for key, ds in dependencies.items()}
    for key, ds in deps.items():
        for d in ds:
            if d not in deps and d not in leaf_nodes:
                raise ValueError(f"task {key!r} reads {d!r}, which is neither a task nor a block")
    order = _topological(deps)
    consumers: dict[Key, list[Key]] = {key: [] for key in deps}
    for key in order:
        for d in deps[key]:
            if d in consumers:
                consumers[d].append(key)
    node = _place(order, deps, consumers, leaf_nodes, leaf_bytes or {}, inline_weights or {})
    rounds: dict[Key, int] = {}
    for key in order:
        rounds[key] = max((rounds[d] + (node[d] != node[key]) for d in deps[key] if d in rounds), default=0)

    groups: dict[tuple[int, str | None], list[Key]] = {}
    for key in order:
        groups.setdefault((rounds[key], node[key]), []).append(key)
    wanted_set = set(wanted)
    parts: list[Part] = []
    for (rnd, where), keys in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        members = set(keys)
        leaves = _unique(d for k in keys for d in deps[k] if d in leaf_nodes)
        inputs = _unique(d for k in keys for d in deps[k] if d in deps and d not in members)
        exports = tuple(k for k in keys if k in wanted_set or any(c not in members for c in consumers[k]))
        parts.append(Part(where, rnd, tuple(keys), leaves, inputs, exports))
    return parts


def _place(
    order: list[Key],
    deps: Mapping[Key, tuple[Key, ...]],
    consumers: Mapping[Key, list[Key]],
    leaf_nodes: Mapping[Key, str | None],
    sizes: Mapping[Key, int],
    inline: Mapping[Key, Mapping[str, int]],
) -> dict[Key, str | None]:
    """The node of every task: where most of the bytes it reads are, else where its readers are."""
    node: dict[Key, str | None] = {}
    for key in order:
        weights: dict[str, int] = dict(inline.get(key, {}))
        for d in deps[key]:
            where = leaf_nodes[d] if d in leaf_nodes else node[d]
            if where is not None:
                weights[where] = weights.get(where, 0) + (sizes.get(d, 1) if d in leaf_nodes else 1)
        node[key] = _heaviest(weights)
    for key in reversed(order):
        if node[key] is None:
            votes: dict[str, int] = {}
            for c in consumers[key]:
                if (where := node[c]) is not None:
                    votes[where] = votes.get(where, 0) + 1
            node[key] = _heaviest(votes)
    return node


def _heaviest(weights: Mapping[str, int]) -> str | None:
    # ties go to the smallest node id, so that every run decides alike
    return min(weights, key=lambda n: (-weights[n], n)) if weights else None


def _unique(items: Iterable[Key]) -> tuple[Key, ...]:
    return tuple(dict.fromkeys(items))


def _topological(deps: Mapping[Key, tuple[Key, ...]]) -> list[Key]:
    """Tasks in an order where each comes after the tasks it reads (Kahn; stable)."""
    waiting = {key: sum(1 for d in ds if d in deps) for key, ds in deps.items()}
    readers: dict[Key, list[Key]] = {key: [] for key in deps}
    for key, ds in deps.items():
        for d in ds:
            if d in deps:
                readers[d].append(key)
    ready = [key for key, n in waiting.items() if n == 0]
    order: list[Key] = []
    while ready:
        key = ready.pop()
        order.append(key)
        for r in readers[key]:
            waiting[r] -= 1
            if waiting[r] == 0:
                ready.append(r)
    if len(order) != len(deps):
        stuck = sorted((repr(k) for k, n in waiting.items() if n > 0))[:5]
        raise ValueError(f"the task graph has a cycle through {', '.join(stuck)}")
    return order

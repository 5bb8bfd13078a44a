"""Locality-aware Dask-on-Ray: a task that reads blocks runs on the node that holds them.

Ray's own locality-aware scheduling is a preference: when the node holding a block has no
free CPU, the task may run elsewhere and pull the whole block over the network. doreisa
knows where every block lives (the node actor that owns it), so it places each task that
reads blocks directly on the node holding most of the bytes it reads, with a *soft* node
affinity (if that node is gone, Ray runs it elsewhere; derived data is never hard-pinned).
Other tasks (reductions of reductions, ...) are left to Ray.

:func:`plan_placement` is pure and tested without Ray; :func:`locality_get` is the Dask
``get`` function.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

Key = Hashable


def plan_placement(
    dependencies: Mapping[Key, frozenset[Key]],
    leaf_nodes: Mapping[Key, str],
    leaf_bytes: Mapping[Key, int],
) -> dict[Key, str]:
    """Node of each task that reads blocks directly.

    Parameters
    ----------
    dependencies : mapping
        For each task key, the keys it reads.
    leaf_nodes : mapping
        For each block (graph key), the node that holds it.
    leaf_bytes : mapping
        For each block (graph key), its size (missing: 1).

    Returns
    -------
    dict
        Task key -> node, for tasks with at least one block among their inputs.
    """
    placement: dict[Key, str] = {}
    for key, deps in dependencies.items():
        weight: dict[str, int] = {}
        for dep in deps:
            node = leaf_nodes.get(dep)
            if node is not None:
                weight[node] = weight.get(node, 0) + leaf_bytes.get(dep, 1)
        if weight:
            # heaviest node; ties go to the smallest node id so that every run decides alike
            placement[key] = min(weight, key=lambda n: (-weight[n], n))
    return placement


def locality_get(
    dsk: Any,
    keys: Any,
    *,
    leaf_nodes: Mapping[str, str],
    leaf_bytes: Mapping[str, int] | None = None,
    ray_remote_args: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Dask ``get``: ``ray.util.dask.ray_dask_get`` with tasks placed next to their blocks.

    ``leaf_nodes`` and ``leaf_bytes`` are keyed by the blocks' object reference ids (``ref.hex()``).
    """
    import ray
    from dask._task_spec import convert_legacy_graph
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
    from ray.util.dask import ray_dask_get
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not isinstance(dsk, Mapping):
        dsk = dsk.__dask_graph__()
    graph = convert_legacy_graph(dict(dsk))
    deps = {k: frozenset(getattr(t, "dependencies", ())) for k, t in graph.items()}
    # Dask's optimisations rename keys and fuse blocks into tasks (as DataNodes inside a fused
    # subgraph), so blocks are recognised by their object references wherever they are.
    nodes: dict[Key, str] = {}
    nbytes: dict[Key, int] = {}
    inline: dict[Key, dict[str, int]] = {}
    for key, task in graph.items():
        for ref_id in _ref_ids(task, ray.ObjectRef):
            if ref_id in leaf_nodes:
                size = (leaf_bytes or {}).get(ref_id, 1)
                if not deps[key] and getattr(task, "value", None) is not None:  # a block on its own
                    nodes[key], nbytes[key] = leaf_nodes[ref_id], size
                else:
                    weights = inline.setdefault(key, {})
                    weights[leaf_nodes[ref_id]] = weights.get(leaf_nodes[ref_id], 0) + size
    _follow_aliases(graph, deps, nodes, nbytes)
    placement = plan_placement(deps, nodes, nbytes)
    for key, weights in inline.items():
        for dep in deps[key]:
            if dep in nodes:
                weights[nodes[dep]] = weights.get(nodes[dep], 0) + nbytes.get(dep, 1)
        placement[key] = min(weights, key=lambda n: (-weights[n], n))
    base = dict(ray_remote_args or {})
    layers: dict[str, MaterializedLayer] = {}
    names = {k: f"doreisa-task-{i}" for i, k in enumerate(graph)}
    for key, task in graph.items():
        args = dict(base)
        if key in placement:
            args["scheduling_strategy"] = NodeAffinitySchedulingStrategy(placement[key], soft=True)
        layers[names[key]] = MaterializedLayer({key: task}, annotations={"ray_remote_args": args})
    hlg = HighLevelGraph(layers, {names[k]: {names[d] for d in deps[k] if d in names} for k in graph})
    return ray_dask_get(hlg, keys, **kwargs)


def _follow_aliases(
    graph: Mapping[Key, Any], deps: Mapping[Key, frozenset[Key]], nodes: dict[Key, str], nbytes: dict[Key, int]
) -> None:
    # An Alias is the same object as its target (ray_dask_get submits no task for it): a block too.
    from dask._task_spec import Alias

    changed = True
    while changed:
        changed = False
        for key, task in graph.items():
            if key not in nodes and isinstance(task, Alias) and len(deps[key]) == 1:
                (target,) = deps[key]
                if target in nodes:
                    nodes[key], nbytes[key] = nodes[target], nbytes.get(target, 1)
                    changed = True


def _ref_ids(obj: Any, ref_type: type, depth: int = 0) -> list[str]:
    """Ids of the object references inside a task: its args, fused subgraphs, data nodes."""
    if isinstance(obj, ref_type):
        return [obj.hex()]  # type: ignore[attr-defined]
    if depth > 8:
        return []
    children: list[Any] = []
    if isinstance(obj, dict):
        children = list(obj.values())  # pyright: ignore[reportUnknownArgumentType]
    elif isinstance(obj, list | tuple):
        children = list(obj)  # pyright: ignore[reportUnknownArgumentType]
    else:
        for attr in ("value", "args", "kwargs"):
            child = getattr(obj, attr, None)
            if child is not None and not callable(child):
                children.append(child)
    return [ref for child in children for ref in _ref_ids(child, ref_type, depth + 1)]

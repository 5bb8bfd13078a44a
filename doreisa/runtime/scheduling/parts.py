"""What runs on a worker: one part of a cut graph, its tasks one after the other next to its blocks."""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from doreisa.runtime.scheduling.cuts import Lru, Slot
from doreisa.runtime.scheduling.gpu import array_module, to_device, to_host
from doreisa.runtime.scheduling.graphs import KEEP, substitute

Key = Hashable


def by_key(exports: tuple[Key, ...], out: Any) -> dict[Key, Any]:
    """What :func:`run_part` returned (one value, or a tuple of several), by export key."""
    return dict(zip(exports, out if len(exports) > 1 else [out], strict=True))


@functools.cache
def run_part_remote() -> Any:
    import ray

    return ray.remote(run_part)


def run_part(
    tasks: dict[Key, Any] | Stored,
    input_keys: tuple[Key, ...],
    exports: tuple[Key, ...],
    *inputs: Any,
    positions: Mapping[Key, int] | None = None,
    device: str = "cpu",
) -> Any:
    """Run one part's tasks in order (inside a Ray worker on the part's node).

    ``inputs`` are the values of ``input_keys``, then the values that the tasks hold as
    :class:`Slot` markers (blocks Dask fused into the tasks' definitions, placeholders).
    ``positions``: the inputs that are blocks stored with others in one object, and their
    index in it. ``device="gpu"``: the blocks become CuPy arrays, the results come back to
    the host (:mod:`doreisa.runtime.scheduling.gpu`).
    """
    if device == "gpu":
        xp = array_module()
        inputs = tuple(to_device(x, xp) for x in inputs)
        return to_host(run_part(tasks, input_keys, exports, *inputs, positions=positions), xp)

    def from_slot(x: Any) -> Any:
        return inputs[x.index] if isinstance(x, Slot) else KEEP

    tasks = tasks_of(tasks)

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
class Stored:
    """A part's tasks in the object store (a cut reused from step to step): fetched once per worker."""

    ref: Any


#: In each worker: the stored parts' tasks it has run, by reference id (the 64 latest parts, 500,000 tasks).
_TASKS = Lru(64, 500_000, len)


def tasks_of(tasks: dict[Key, Any] | Stored) -> dict[Key, Any]:
    if not isinstance(tasks, Stored):
        return tasks
    key = tasks.ref.hex()
    found: dict[Key, Any] | None = _TASKS.get(key)
    if found is None:
        import ray

        found = cast(dict[Key, Any], ray.get(tasks.ref))
        _TASKS.put(key, found)
    return found

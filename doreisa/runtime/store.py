"""Blocks against the size of Ray's object store (reliability cases B8 and L8).

Ray accepts an object larger than its store by allocating it on disk ("fallback allocation"),
and spills objects to disk when the store is full: the values stay right, but every block then
costs a disk write. doreisa's backpressure bounds the steps in flight, not their bytes, so it
says so when the bytes cannot fit, before anything is spilled:

* a rank, when it opens an array's staging: its own block over ``backpressure.max_store_fraction``
  of its node's store (:func:`block_over_store`);
* a node actor, as its ranks open their rings: the bytes its ranks can keep in flight
  (``max_in_flight`` steps, and the array's ``window``) over that fraction (:class:`StoreBudget`),
  once per node, reported in the run's warnings.

Shared by both sides: numpy-free and Ray-free.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from doreisa.errors import StoreWarning


def size(nbytes: float) -> str:
    """``nbytes`` in KiB, MiB or GiB, one decimal: what the warnings print."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**10:.1f} KiB"


def block_over_store(rank: int, array: str, nbytes: int, store_bytes: int | None, fraction: float) -> str | None:
    """Why one block of ``nbytes`` is too large for a store of ``store_bytes``, or None (fits, or size unknown)."""
    if not store_bytes or nbytes <= fraction * store_bytes:
        return None
    return (
        f"rank {rank}: a block of {array!r} is {size(nbytes)}, over {fraction:g} of its node's object store "
        f"({size(store_bytes)}; backpressure.max_store_fraction): Ray will write it to disk. Copy less "
        "(select, preprocess: downsample), spread the array over more ranks, or give Ray a larger store "
        "(ray start --object-store-memory)"
    )


def warn_if_over_store(rank: int, array: str, nbytes: int, store_bytes: int | None, fraction: float) -> None:
    """On a rank, as it opens an array's staging: a :class:`StoreWarning` if its block will not fit."""
    problem = block_over_store(rank, array, nbytes, store_bytes, fraction)
    if problem is not None:
        warnings.warn(problem, StoreWarning, stacklevel=2)


@dataclass
class StoreBudget:
    """The bytes a node's ranks can keep in the store at once, checked as their rings open.

    ``held``: per array, how many of its steps may be in the store together: the steps in flight
    (``max_in_flight``) and, for an analytic's window, the ones before them.
    """

    store_bytes: int | None
    fraction: float
    held: dict[str, int]
    # array -> (rank, ring) -> bytes: a rank has a ring per chunk of the array it fills
    blocks: dict[str, dict[tuple[int, int], int]] = field(default_factory=dict[str, dict[tuple[int, int], int]])
    warned: bool = False

    def add(self, array: str, rank: int, nbytes: int, ring: int = 0) -> str | None:
        """A rank opened ring ``ring`` of ``array`` with blocks of ``nbytes``: the warning, the first time they
        cannot fit."""
        self.blocks.setdefault(array, {})[rank, ring] = nbytes
        if self.warned or not self.store_bytes:
            return None
        step_bytes = {a: sum(ranks.values()) for a, ranks in self.blocks.items()}
        need = sum(b * self.held.get(a, 1) for a, b in step_bytes.items())
        budget = self.fraction * self.store_bytes
        if need <= budget:
            return None
        self.warned = True
        per_step = sum(step_bytes.values())
        arrays = ", ".join(f"{a!r} {size(b)} x {self.held.get(a, 1)}" for a, b in step_bytes.items())
        fits = int(budget // per_step)
        advice = [f"lower backpressure.max_in_flight (about {fits} steps fit)"] if fits >= 1 else []
        advice += ["copy less (select, preprocess)", "give Ray a larger store (ray start --object-store-memory)"]
        todo = ", ".join(advice[:-1]) + " or " + advice[-1]
        return (
            f"the blocks of this node's {max(len({r for r, _ in rs}) for rs in self.blocks.values())} rank(s) in "
            f"flight can reach "
            f"{size(need)} ({arrays} steps), over {self.fraction:g} of its object store ({size(self.store_bytes)}; "
            f"backpressure.max_store_fraction): Ray will spill to disk before backpressure holds the simulation. "
            f"{todo[0].upper()}{todo[1:]}"
        )

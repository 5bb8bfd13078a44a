"""``placement: auto`` on one node: a step stays in situ while the node's store has room, else goes in transit.

A node actor puts a step's blocks into its own object store (in situ) or relays them to a
transit actor on an analytics node (in transit). For an array placed ``auto`` it decides per
step, from the bytes of the steps it put itself and that the analytics have not finished yet
(released as their ``Done`` comes): if this step would take them over ``store_fraction`` of
its store, the step goes in transit. So a simulation whose nodes run short of store keeps
running instead of spilling or blocking, and moves back in situ once the analytics catch up.
Each change of decision is reported (:class:`~doreisa.runtime.protocol.PlacementChanged`) and
recorded in ``provenance.jsonl``.

Plain logic, without Ray: the node's serving thread decides, the actor's thread releases.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from doreisa.runtime.protocol import PlacementChanged


class AutoPlacement:
    """One node's decisions for its arrays placed ``auto`` (``fractions``: array -> ``store_fraction``)."""

    def __init__(self, node: str, fractions: Mapping[str, float], store_bytes: int | None) -> None:
        self._node, self._fractions, self._store = node, dict(fractions), store_bytes
        self._held: dict[tuple[str, int], int] = {}  # (array, step) put in situ, not analysed yet -> bytes
        self._where: dict[str, str] = {}  # the last decision per array
        self._lock = threading.Lock()

    def __contains__(self, array: object) -> bool:
        return array in self._fractions

    def in_transit(self, array: str, step: int, nbytes: int) -> tuple[bool, PlacementChanged | None]:
        """Does this step of ``array`` go in transit? And the change to report, if the decision changed."""
        with self._lock:
            held = sum(self._held.values())
            transit = self._store is not None and held + nbytes > self._fractions[array] * self._store
            if not transit:
                self._held[(array, step)] = self._held.get((array, step), 0) + nbytes
        where = "in_transit" if transit else "in_situ"
        if self._where.get(array) == where:
            return transit, None
        self._where[array] = where
        return transit, PlacementChanged(self._node, array, step, where, held, self._store or 0)

    def done(self, items: Iterable[tuple[str, int]]) -> None:
        """The analytics finished these (array, step): their blocks no longer count."""
        with self._lock:
            for item in items:
                self._held.pop(item, None)

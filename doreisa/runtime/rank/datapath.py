"""The data path of a rank: room for a wanted step under the backpressure policy, then one copy per chunk.

Split from :mod:`~doreisa.runtime.rank.bridge`, which decides *whether* a step is copied (the
contract's cadence, the layout, the steering); this module decides *how*: it waits for room
(``block``), agrees with the other ranks to skip (``skip``) or never waits (``latest``), reserves
a slot in each of the array's rings, and copies each chunk the rank fills into its slot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from doreisa.errors import BridgeError
from doreisa.runtime.plan import RankPlan
from doreisa.runtime.rank.arrays import ArrayRun, InFlight
from doreisa.runtime.rank.device import DeviceBlock, copied_part
from doreisa.runtime.rank.stats import BridgeStats
from doreisa.runtime.rank.transport import Transport


class DataPath:
    """How a rank's wanted steps reach the runtime, and the steps it has in flight."""

    def __init__(self, link: Transport, plan: RankPlan, stats: BridgeStats, rank: int) -> None:
        self._link, self._plan, self._stats, self._rank = link, plan, stats, rank
        #: the steps handed over and not analysed yet: what backpressure counts
        self.in_flight = InFlight()

    def make_room(self, run: ArrayRun, step: int) -> bool:
        """Is there room for ``step`` under the backpressure policy? (False: skipped or dropped, counted)"""
        policy, link, in_flight = self._plan.backpressure, self._link, self.in_flight
        # Credits only grow while unread, so stale counts that show room are right: read the socket
        # only when they show none, or every so many copies (free slots are seen in shared memory).
        link.poll(now=len(in_flight) >= policy.max_in_flight and policy.policy != "latest")
        if policy.policy == "latest":  # never waits: the runtime drops the oldest step waiting for the analytics
            return True
        if link.detached is not None and policy.policy == "block":
            self._stats.dropped += 1
            return False
        if policy.policy == "block" and (len(in_flight) < policy.max_in_flight or step in in_flight):
            return True
        room = lambda: step in in_flight or len(in_flight) < policy.max_in_flight  # noqa: E731
        if policy.policy == "skip":
            assert run.comm is not None, "a rank that does not publish the array never gets here"
            if all(run.comm.allgather(room())):  # among the ranks that publish the array
                return True
            self._stats.skipped += 1
            self._stats.skipped_steps.append((run.array.name, step))
            return False
        return self.wait_or_drop(room, f"room for step {step} (backpressure: block)")

    def wait_or_drop(self, ready: Callable[[], bool], what: str) -> bool:
        """Wait up to ``timeouts.block`` for ``ready``; past it, detach and count the step dropped (False)."""
        try:
            self._link.wait(ready, self._plan.timeouts.block, what)
        except BridgeError as exc:
            self._link.detach(str(exc))
            self._stats.dropped += 1
            return False
        return True

    def copy(self, run: ArrayRun, blocks: tuple[Any, ...], step: int, time: float | None, tags: int) -> bool:
        """Copy each chunk the rank fills into its ring: a slot for every chunk first, so a step is never half posted.

        ``tags``: the triggers active at ``step``, one bit per trigger of the contract.
        """
        tiling, array = run.tiling, run.array
        assert tiling is not None, "the layout is agreed at the first publish"
        # before any staging is opened: an error leaves nothing
        parts = [copied_part(array, piece, blocks[piece.tile], self._rank) for piece in tiling.pieces]
        if not run.stagings:
            run.stagings = tuple(self._link.open(array, piece, self._plan.backpressure) for piece in tiling.pieces)
        for staging in run.stagings:
            if not staging.has_slot() and not self.wait_or_drop(staging.has_slot, "a free staging slot"):
                return False
        self.in_flight.add(step, array.name)
        stats = self._stats
        stats.max_in_flight = max(stats.max_in_flight, len(self.in_flight))
        for piece, part, staging in zip(tiling.pieces, parts, run.stagings, strict=True):
            dst = staging.reserve(step, time, tags)  # the bookkeeping before the copy, which leaves caches cold
            block = blocks[piece.tile]
            if type(block) is DeviceBlock:
                block.to_host(part, dst)  # one device-to-host copy, straight into the slot
            else:  # dtype and shape are checked above: a plain assignment, which costs half np.copyto's call when cold
                dst[...] = part
            if not staging.post():  # the runtime is gone: the slot will never be taken
                stats.dropped += 1
                return False
            stats.published += 1
            stats.bytes_copied += dst.nbytes
        return True

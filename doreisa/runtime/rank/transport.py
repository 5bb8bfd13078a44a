"""The seam between a rank and the runtime: how blocks and messages leave the simulation.

A :class:`Transport` connects a rank to the runtime and says what the runtime answered
(:class:`~doreisa.runtime.protocol.Welcome`: the contract and its compiled plan); for each array the rank copies, it
opens a :class:`Staging` area where a block is copied into a reserved slot, then posted. The
runtime's answers (:class:`~doreisa.runtime.protocol.Done`) reach the rank through the
``on_done`` callback whenever the transport reads them: when polled, or while a rank waits.

Implementations: :class:`~doreisa.runtime.rank.shm.ShmTransport` (a node-local shared memory
ring per array, a Unix socket to the node actor: what ``doreisa run`` uses) and
:class:`~doreisa.runtime.rank.inprocess.InProcessTransport` (blocks kept in this process: unit
tests, notebooks). A new transport (RDMA, another node-local store) implements these two
protocols; the :class:`~doreisa.runtime.rank.bridge.Bridge` takes it as ``transport=``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from doreisa.runtime.plan import BackpressurePlan
from doreisa.runtime.protocol import Done, RankMessage, RankStats, Welcome
from doreisa.runtime.rank.arrays import BlockCopy, RankArray


class Staging(Protocol):
    """Where one array's copied blocks wait until the runtime has taken them (slots of a ring)."""

    def has_slot(self) -> bool:
        """Is a slot free now (without waiting)?"""
        ...

    def reserve(self, step: int, time: float | None, tags: int = 0) -> np.ndarray[Any, Any]:
        """Label a free slot with the step and time of the block about to be copied; the slot to copy into.

        ``tags``: the triggers active at that step, one bit per trigger of the contract (the
        analytics run a trigger's own analytics on the blocks it tags).

        Before the copy: the copy of a large block evicts the caches, and what follows it runs cold.
        """
        ...

    def post(self) -> bool:
        """Hand the reserved slot, now written, to the runtime; False (and the slot released) if the link is lost."""
        ...

    def idle(self) -> bool:
        """Has the runtime taken every slot posted?"""
        ...

    def pending(self) -> int:
        """Slots posted and not taken yet."""
        ...


class Transport(Protocol):
    """A rank's link to the runtime; once lost (``detached``), nothing more is sent."""

    #: what the runtime answered when the rank connected
    welcome: Welcome
    #: why the link was lost, or None
    detached: str | None
    #: posts that had to wake the runtime with a system call
    wakes: int

    def bind(self, *, rank: int, on_done: Callable[[Done], None], on_detach: Callable[[], None]) -> None:
        """Say who reads the runtime's answers (``on_done``) and who learns that the link is lost (once)."""
        ...

    def open(self, array: RankArray, copy: BlockCopy, backpressure: BackpressurePlan) -> Staging:
        """The staging area of ``array``, and tell the runtime how to read it."""
        ...

    def poll(self, *, now: bool = True) -> None:
        """Handle what the runtime sent, without waiting; ``now=False``: only every so many calls (per copy)."""
        ...

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Handle the runtime's messages until ``condition()``.

        Raises
        ------
        BridgeError
            After ``timeout`` s, or when the link is lost meanwhile.
        """
        ...

    def send(self, message: RankMessage) -> bool:
        """Send ``message`` unless the link is lost; False if it was not sent."""
        ...

    def detach(self, reason: str) -> None:
        """Give up on the runtime: the simulation goes on, and what it publishes is dropped and counted."""
        ...

    def close(self, stats: RankStats, timeout: float) -> tuple[int, int]:
        """Wait up to ``timeout`` s until the runtime took every block, send ``stats``, disconnect.

        Returns the blocks posted and never taken, and their bytes (the caller counts them dropped).
        """
        ...

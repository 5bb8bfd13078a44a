"""A transport without a runtime: what a rank hands over stays in this process, for tests and notebooks.

The caller plays the analytics: it reads :attr:`InProcessTransport.posted` and answers with
:meth:`InProcessTransport.done`, which the bridge reads at its next poll or wait, as it
would read a node actor's message. Nothing here waits for anyone: a bridge that would wait for
an answer no one queued fails at once with the ``BridgeError`` it would raise after its timeout.

Examples
--------
>>> transport = InProcessTransport(contract)  # doctest: +SKIP
>>> bridge = doreisa.Bridge(SingleProcessComm(), transport=transport)  # doctest: +SKIP
>>> bridge.publish("t", block, step=0)  # doctest: +SKIP
>>> transport.posted[0].block  # a copy of what the analytics would see  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from doreisa.errors import BridgeError
from doreisa.runtime.plan import BackpressurePlan, rank_plan
from doreisa.runtime.protocol import Close, Decision, Done, RankMessage, RankStats, RingOpened, Welcome
from doreisa.runtime.rank.arrays import BlockCopy, RankArray
from doreisa.runtime.store import warn_if_over_store

if TYPE_CHECKING:
    from doreisa.contract import Contract


@dataclass(frozen=True)
class Posted:
    """A block a rank handed over: its array, step, time, place in the chunk grid, and a copy of it."""

    array: str
    step: int
    time: float | None
    index: tuple[int, ...]
    block: np.ndarray[Any, Any]
    tags: int = 0  # the triggers active at the step, one bit each


class _Slots:
    """One array's staging: one slot, taken (copied out) as soon as it is posted."""

    def __init__(self, transport: InProcessTransport, array: str, copy: BlockCopy) -> None:
        self._transport, self._array, self._index = transport, array, copy.index
        self._buffer = np.empty(copy.shape, copy.dtype)
        self._label: tuple[int, float | None, int] = (-1, None, 0)

    def has_slot(self) -> bool:
        return True

    def reserve(self, step: int, time: float | None, tags: int = 0) -> np.ndarray[Any, Any]:
        self._label = (step, time, tags)
        return self._buffer

    def post(self) -> bool:
        if self._transport.detached is not None:
            return False
        step, time, tags = self._label
        self._transport.posted.append(Posted(self._array, step, time, self._index, self._buffer.copy(), tags))
        return True

    def idle(self) -> bool:
        return True

    def pending(self) -> int:
        return 0


class InProcessTransport:
    """See the module; implements :class:`~doreisa.runtime.rank.transport.Transport`.

    Parameters
    ----------
    contract : Contract or Welcome
        What the runtime would hand the rank: a contract (compiled into its plan here, as a node
        actor does), or the node actor's whole answer (``node_id`` and ``store_bytes`` then unused).
    node_id : str
        What the rank reports as its node (``Bridge.node_id``).
    store_bytes : int, optional
        The object store size a node actor would report: blocks over
        ``backpressure.max_store_fraction`` of it get a :class:`~doreisa.errors.StoreWarning`.
    """

    def __init__(
        self, contract: Contract | Welcome, *, node_id: str = "in-process", store_bytes: int | None = None
    ) -> None:
        if not isinstance(contract, Welcome):
            contract = Welcome(node_id, contract.to_plain(), rank_plan(contract), store_bytes)
        self.welcome = contract
        self.detached: str | None = None
        self.wakes = 0
        #: every block handed over, in order
        self.posted: list[Posted] = []
        #: every message the rank sent (ring openings, monitors, decisions applied, its close)
        self.sent: list[RankMessage] = []
        self._answers: list[Done] = []
        self._rank = -1
        self._on_done: Callable[[Done], None] = lambda done: None
        self._on_detach: Callable[[], None] = lambda: None

    def done(self, *items: tuple[str, int], decisions: tuple[Decision, ...] = ()) -> None:
        """Answer as the analytics: these (array, step) are analysed, and these decisions were taken."""
        self._answers.append(Done(tuple(items), decisions))

    def bind(self, *, rank: int, on_done: Callable[[Done], None], on_detach: Callable[[], None]) -> None:
        self._rank, self._on_done, self._on_detach = rank, on_done, on_detach

    def open(self, array: RankArray, copy: BlockCopy, backpressure: BackpressurePlan) -> _Slots:
        shape, dtype = copy.shape, copy.dtype.str
        nbytes = copy.nbytes
        warn_if_over_store(self._rank, array.name, nbytes, self.welcome.store_bytes, backpressure.max_store_fraction)
        self.sent.append(
            RingOpened(array.name, copy.ring, copy.index, "", 1, 0, shape, dtype, copy.chunks, copy.nblocks)
        )
        return _Slots(self, array.name, copy)

    def poll(self, *, now: bool = True) -> None:
        answers, self._answers = self._answers, []
        for done in answers:
            self._on_done(done)

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        self.poll()
        if self.detached is not None:
            raise BridgeError(f"rank {self._rank}: lost the runtime while waiting for {what}: {self.detached}")
        if not condition():
            raise BridgeError(
                f"rank {self._rank}: waited for {what}; nothing in this process answers (call transport.done() first)"
            )

    def send(self, message: RankMessage) -> bool:
        if self.detached is not None:
            return False
        self.sent.append(message)
        return True

    def detach(self, reason: str) -> None:
        if self.detached is None:
            self.detached = reason
            self._on_detach()

    def close(self, stats: RankStats, timeout: float) -> tuple[int, int]:
        self.poll()
        self.send(Close(self._rank, stats))
        return 0, 0

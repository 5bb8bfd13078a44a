"""Rebuilding the head actor's state from the node actors, when Ray restarted it empty.

The head holds the steps in flight (their blocks' references) and the events the session has
not taken yet, and it is a single actor. Ray restarts it when it dies (``max_restarts``), with
an empty state. So each node actor keeps what it reported until it is no longer needed
(:class:`ReportLog`): the block records of every step the analytics have not finished
(``settle``, from the session's ``Done``), and the events of the batches the session has not
taken (``ack``, from the head's ``Taken.applied``). Keeping a block's record keeps its object
reference, and with it the object: the node actor owns every block, the head only borrows. A
record is dropped at ``settle``, so an object lives no longer than it did without all this.

The session (:class:`HeadReader`) sees that the head was restarted (its ``incarnation``
changed, or Ray said it is unavailable), calls ``HeadState.rebuild`` with a new epoch, then asks
every node actor to send all it keeps again, as batch 0 of that epoch. The head drops batches of
an older epoch, so nothing sent to the dead head, or to the new one before the rebuild, counts
twice. Steps the session had already taken come again and are dropped by the session: every
step is analysed once, and a step still incomplete is completed from the blocks sent again (or
expires into ``StepLost`` as before).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from doreisa.errors import ClusterError
from doreisa.runtime.cluster.calls import CONTROL_TIMEOUT, ask
from doreisa.runtime.cluster.head import RecentKeys
from doreisa.runtime.cluster.node import Report
from doreisa.runtime.protocol import BlockRecord, Taken

log = logging.getLogger("doreisa.session")
#: Seconds a restarted head has to answer again (Ray starts a new worker process for it: about 1 s here).
RESTART_TIMEOUT = 120.0
#: The session tells the node actors which batches it has taken at most this often (s); a rebuild says it exactly.
ACK_EVERY = 1.0


def sender_name(node_id: str) -> str:
    """How a node actor signs its batches to the head."""
    return f"node-{node_id}"


class ReportLog:
    """A node actor's batches to the head, numbered, and what of them the head may need again.

    Parameters
    ----------
    send : callable
        ``send(batch, seq, epoch)``: hand a batch to the head (a Ray call that does not wait).
    """

    def __init__(self, send: Callable[[list[Report], int, int], None]) -> None:
        self._send = send
        self._lock = threading.Lock()  # the serving thread reports; Ray's threads ack, settle and resend
        self.epoch = 0
        self._seq = 0
        self._unacked: list[tuple[int, list[Report]]] = []  # (seq, its events) of this epoch, not yet taken
        self._unsettled: dict[tuple[str, int], dict[tuple[int, ...], BlockRecord]] = {}

    def report(self, batch: list[Report]) -> None:
        """Send ``batch`` as the next of this epoch, and keep it."""
        with self._lock:
            self._keep_and_send(batch)

    def _keep_and_send(self, batch: list[Report]) -> None:
        events = []
        for item in batch:
            if isinstance(item, BlockRecord):
                self._unsettled.setdefault((item.array, item.step), {})[item.index] = item
            else:
                events.append(item)
        if events:
            self._unacked.append((self._seq, events))
        seq, self._seq = self._seq, self._seq + 1
        self._send(batch, seq, self.epoch)

    def ack(self, epoch: int, seq: int) -> None:
        """The session took the events of every batch of ``epoch`` before ``seq``: they need not be sent again."""
        with self._lock:
            if epoch == self.epoch:
                self._unacked = [(s, batch) for s, batch in self._unacked if s >= seq]

    def settle(self, items: Iterable[tuple[str, int]]) -> None:
        """These (array, step) were analysed, dropped or lost: their blocks need not be sent again."""
        with self._lock:
            for key in items:
                self._unsettled.pop(key, None)

    def resend(self, epoch: int, acked: int) -> int:
        """Start ``epoch``: send again, as its batch 0, what the head may have lost; return how many items.

        ``acked`` is how many batches of the old epoch the session has taken (their events need not
        come again). The blocks of the unsettled steps first, in the order they came (a rank's steps
        in order), then the events not taken, in order: a rank's 'closed' stays after its blocks.
        """
        with self._lock:
            again: list[Report] = [record for step in self._unsettled.values() for record in step.values()]
            again += [event for s, events in self._unacked if s >= acked for event in events]
            self.epoch, self._seq, self._unacked = epoch, 0, []
            if again:
                self._keep_and_send(again)
            return len(again)

    @property
    def kept(self) -> tuple[int, int]:
        """Batches whose events are kept, and steps whose blocks are kept (for tests and counts)."""
        with self._lock:
            return len(self._unacked), len(self._unsettled)


class HeadReader:
    """The session's side of the head: takes from it, and rebuilds it when Ray restarted it.

    Parameters
    ----------
    head : Ray actor handle
        The head actor (``HeadState``).
    nodes : dict
        The node actors, by :func:`sender_name`; the session removes those that died.
    on_rebuilt : callable
        Receives one line saying the head was rebuilt (the session keeps it for the summary).
    """

    def __init__(self, head: Any, nodes: dict[str, Any], on_rebuilt: Callable[[str], None] = lambda line: None) -> None:
        self.head, self.nodes, self._on_rebuilt = head, nodes, on_rebuilt
        self.incarnation: str | None = None
        self.epoch = 0
        self._acked: dict[str, int] = {}  # per node actor: batches of this epoch whose events were taken
        self._told: dict[str, int] = {}  # what the node actors were last told of it
        self._told_at = 0.0
        self._settled = RecentKeys()  # analysed, dropped or lost: if the head hands them again, ignored

    def take(self, timeout: float) -> Taken:
        """What the head has; after a restart of the head, nothing (it is rebuilt, and the steps come again)."""
        try:
            taken: Taken = ask(self.head.take.remote(timeout), what="head actor", timeout=timeout + CONTROL_TIMEOUT)
        except ClusterError as exc:
            if not exc.transient:
                raise
            log.warning("%s: waiting for Ray to restart it", exc)
            return self._rebuild()
        if self.incarnation is None:
            self.incarnation = taken.incarnation
        elif taken.incarnation != self.incarnation:  # restarted between two calls: what it says is stale
            return self._rebuild()
        self._acked.update(taken.applied)
        self._tell_acked()
        steps = tuple(s for s in taken.steps if (s.array, s.step) not in self._settled)
        return msgspec.structs.replace(taken, steps=steps) if len(steps) < len(taken.steps) else taken

    def settled(self, items: Iterable[tuple[str, int]]) -> None:
        """These (array, step) were analysed, dropped or lost: if the head hands them again, they are ignored."""
        for key in items:
            self._settled.add(key)

    def _tell_acked(self) -> None:
        now = time.monotonic()
        if now - self._told_at < ACK_EVERY:
            return
        self._told_at = now
        for sender, seq in self._acked.items():
            node = self.nodes.get(sender)
            if node is not None and self._told.get(sender) != seq:
                node.ack.remote(self.epoch, seq)
                self._told[sender] = seq

    def _rebuild(self) -> Taken:
        """Wait for the restarted head, start a new epoch on it, and have every node actor send again."""
        deadline = time.monotonic() + RESTART_TIMEOUT
        self.epoch += 1
        while True:
            try:
                self.incarnation = ask(self.head.rebuild.remote(self.epoch), what="head actor")
                break
            except ClusterError as exc:
                if not exc.transient or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        sent = 0
        for sender, node in list(self.nodes.items()):
            try:
                sent += ask(node.resend.remote(self.epoch, self._acked.get(sender, 0)), what=f"node actor {sender}")
            except ClusterError as exc:  # a dead node actor: the session's watch ends the run, naming it
                log.error("%s", exc)
        self._acked, self._told = {}, {}
        said = (
            f"the head actor was restarted (Ray restarted it empty): its state was rebuilt from the node actors, "
            f"which sent {sent} blocks and events again; no step was analysed twice"
        )
        log.warning("%s", said)
        self._on_rebuilt(said)
        return Taken((), (), 0, self.incarnation or "")

    def keep(self, actors: list[Any]) -> None:
        """Ask only these node actors from now on (the others died; the run goes on without them)."""
        self.nodes = {sender: node for sender, node in self.nodes.items() if any(node is a for a in actors)}

"""The node actor: the Ray actor around :class:`~doreisa.runtime.cluster.node.NodeServer`, one per Ray node.

It finds its node's object store size (for the checks of :mod:`doreisa.runtime.store` and
``placement: auto``), reports to the head in numbered batches, keeping what a restarted head
would need again (:mod:`doreisa.runtime.cluster.rebuild`), and relays blocks to the transit
actors of the analytics nodes (in transit).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np

from doreisa.contract import Contract
from doreisa.runtime.cluster.cost import cpu_since, tree_cpu
from doreisa.runtime.cluster.node import NodeServer
from doreisa.runtime.cluster.rebuild import ReportLog, sender_name
from doreisa.runtime.protocol import Done, NodeCounts


class NodeActor:
    """Ray actor around :class:`NodeServer`; created by the runtime, one per node."""

    def __init__(
        self,
        *,
        run_dir: str,
        contract: Contract,
        head: Any,
        ingest: bool = True,
        transit: list[tuple[Any, str]] | None = None,
        relayed: list[str] | None = None,
    ) -> None:
        import ray

        self._transit = transit or []
        self._next = 0
        node_id = ray.get_runtime_context().get_node_id()
        sender = sender_name(node_id)
        # batches to the head are numbered (the head applies them in order) and kept until no longer needed
        self._log = ReportLog(lambda batch, seq, epoch: head.add.remote(batch, sender, seq, epoch))
        store = next((n["Resources"].get("object_store_memory") for n in ray.nodes() if n["NodeID"] == node_id), None)
        self._server = NodeServer(
            run_dir=run_dir,
            node_id=node_id,
            host=socket.gethostname(),
            contract=contract,
            put=ray.put,
            report=self._log.report,
            ingest=ingest,
            relay=self._relay if self._transit else None,
            relayed=frozenset(relayed or ()),
            store_bytes=int(store) if store else None,
        )
        self._server.start()
        self._cpu_start = tree_cpu(os.getppid())  # the raylet of this node, and every process it started

    def _relay(self, blocks: np.ndarray[Any, Any] | list[np.ndarray[Any, Any]]) -> tuple[Any, str]:
        actor, node = self._transit[self._next % len(self._transit)]
        self._next += 1
        return actor.relay.remote(blocks), node

    def node_id(self) -> str:
        """The Ray node this actor serves."""
        return self._server.node_id

    def progress(self, done: Done) -> None:
        """Forward analysed (array, step) pairs and decisions to the ranks (backpressure, feedback)."""
        self._log.settle(done.items)
        self._server.progress(done)

    def drop_transit(self, node: str) -> None:
        """The analytics node ``node`` was lost: relay to the others from now on."""
        self._transit = [(actor, n) for actor, n in self._transit if n != node]

    def ack(self, epoch: int, seq: int) -> None:
        """The session took the events of this actor's batches of ``epoch`` before ``seq``."""
        self._log.ack(epoch, seq)

    def resend(self, epoch: int, acked: int) -> int:
        """The head was rebuilt in ``epoch``: send it again what it may have lost (see ``ReportLog.resend``)."""
        return self._log.resend(epoch, acked)

    def counts(self) -> NodeCounts:
        """Blocks and bytes ingested, ranks seen, objects stored (``puts``) and seconds spent storing them."""
        server = self._server
        cpu_s = cpu_since(self._cpu_start, tree_cpu(os.getppid()))
        return NodeCounts(server.node_id, **server.counts, cpu_s=cpu_s, store_error=server.store_error)

    def stop(self) -> None:
        """Stop serving."""
        self._server.stop()

"""The node actor: one per Ray node. It owns every block published on its node.

Ranks are not Ray drivers (a Ray driver costs ~200 MB and ~2 s per rank). Each rank copies
a wanted block into its shared memory ring and posts it in the ring's header; the node
actor's serving thread finds the post, copies the slot into Ray's object store with
``ray.put`` (so the actor owns the object, and the data outlives the rank), frees the slot,
and reports the reference to the head. The thread polls the rings' headers every
``handover.poll_ms`` while blocks keep coming (less than ``handover.linger_ms`` apart), so
that a rank's post costs no system call; idle, it sleeps on the sockets and a rank's post
sends a ``wake`` record (see :mod:`doreisa.runtime.protocol`). The blocks of one array and step that
arrive together (one per rank of the node, in a dense step) go into one object with one
``ray.put``: a put costs ~1 ms whatever its size on these machines, so a node of R ranks
pays it once per step instead of R times; each block is then reported as (object, position
in it), in rank order.
:class:`NodeServer` is the plain logic (``put`` and ``report`` are injected, so it is
tested without Ray); :class:`~doreisa.runtime.cluster.node_actor.NodeActor` is the Ray actor around it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from doreisa.contract import Contract
from doreisa.errors import ProtocolError
from doreisa.runtime import _names
from doreisa.runtime.cluster.placement import AutoPlacement
from doreisa.runtime.cluster.ranks import PostedSlot, RankConn
from doreisa.runtime.plan import rank_plan
from doreisa.runtime.protocol import (
    Applied,
    BlockRecord,
    Close,
    Done,
    Event,
    Hello,
    MonitorBatch,
    NodeInfo,
    NodeWarning,
    Publishing,
    RankClosed,
    RankError,
    RankJoined,
    RankLost,
    RankMessage,
    RingOpened,
    TriggerFailed,
    Welcome,
    describe,
)
from doreisa.runtime.ring import ASLEEP, TOTAL_STORE_ORDER, fence
from doreisa.runtime.store import StoreBudget
from doreisa.runtime.wire import Malformed, Wake, encode, free_record

#: What a node actor reports to the head, in batches.
Report = BlockRecord | Event

log = logging.getLogger("doreisa.node")

#: Longest sleep (seconds): the thread also checks whether to stop.
IDLE_WAIT = 0.1


class NodeServer:
    """Accepts ranks on a Unix socket and ingests their blocks."""

    def __init__(
        self,
        *,
        run_dir: str,
        node_id: str,
        host: str,
        contract: Contract,
        put: Callable[[Any], Any],
        report: Callable[[list[Report]], None],
        ingest: bool = True,
        relay: Callable[[Any], tuple[Any, str]] | None = None,
        relayed: frozenset[str] = frozenset(),
        poll: bool = TOTAL_STORE_ORDER,
        store_bytes: int | None = None,
    ) -> None:
        self.node_id = node_id
        handover = contract.handover
        #: read the rings' headers every ``_poll_interval`` s while the last post is less than ``_linger``
        #: s old (else: every post wakes us, and where ``poll`` is False, as where stores are not seen in
        #: order, only the rings of the ranks that woke us are read: see ``protocol.TOTAL_STORE_ORDER``)
        self._poll_interval, self._linger = handover.poll_ms / 1e3, handover.linger_ms / 1e3
        self._poll = poll and self._linger > 0
        self._asleep = True
        # what every rank of this node receives: the contract compiled into the plan a rank runs, encoded once
        self._welcome = encode(Welcome(node_id, contract.to_plain(), rank_plan(contract), store_bytes))
        held = {n: contract.backpressure.max_in_flight + (a.window or 1) - 1 for n, a in contract.arrays.items()}
        self._budget = StoreBudget(store_bytes, contract.backpressure.max_store_fraction, held)
        self._put = put
        self._relay = relay
        self._relayed = relayed
        auto = {a: p.store_fraction for a in contract.arrays if (p := contract.placement_of(a)).mode == "auto"}
        self._auto = AutoPlacement(node_id, auto, store_bytes)
        self._report = report
        nodes = Path(run_dir) / _names.NODES_SUBDIR
        nodes.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(run_dir, 0o700)
        self.socket_path = str(nodes / f"{node_id[:16]}.sock")
        self._info_path = nodes / f"{node_id[:16]}.json"
        self._info = NodeInfo(node_id, host, self.socket_path, ingest)
        self._selector = selectors.DefaultSelector()
        self._conns: dict[int, RankConn] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._puts: list[PostedSlot] = []  # this round's blocks, copied together at the end of the round
        self.counts = {"blocks": 0, "bytes": 0, "ranks": 0, "puts": 0, "put_seconds": 0.0, "not_stored": 0}
        self._store_failures: set[str] = set()  # the kinds of put failure already reported (then only counted)
        self.store_error = ""  # the first of them, as reported (NodeCounts.store_error)

    def start(self) -> None:
        """Listen, publish the socket in the run folder, and serve in a background thread."""
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        listener.listen(256)
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, None)
        tmp = self._info_path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(self._info))
        tmp.rename(self._info_path)
        self._thread = threading.Thread(target=self._serve, name="doreisa-node", daemon=True)
        self._thread.start()

    def progress(self, done: Done) -> None:
        """Tell every rank of this node that these (array, step) have been analysed, and what was decided."""
        self._auto.done(done.items)
        frame = encode(done)
        for conn in list(self._conns.values()):
            self._tell(conn, frame)

    def stop(self) -> None:
        """Stop serving, close every connection and unmap every ring."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._set_asleep(True)  # a rank's next post wakes us, finds the socket closed, and counts it dropped
        for conn in list(self._conns.values()):
            self._close_conn(conn)
        if self._listener is not None:
            self._listener.close()
        for path in (self.socket_path, self._info_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        nodes = self._info_path.parent
        for folder in (nodes, nodes.parent):  # the run folder, once the last node actor of this host is gone
            with contextlib.suppress(OSError):  # another node actor's files are still there: it removes them
                folder.rmdir()

    def _serve(self) -> None:
        last_post = -self._linger
        while not self._stop.is_set():
            batch: list[Report] = []
            for key, _ in self._selector.select(timeout=IDLE_WAIT if self._asleep else self._poll_interval):
                if key.data is None:
                    self._accept()
                else:
                    self._read(key.data, batch)
            self._collect_all()
            now = time.monotonic()
            if self._puts:
                last_post = now
            polling = self._poll and now - last_post < self._linger
            if polling == self._asleep:  # before the ingest, which may be long: no wakes while it runs
                self._set_asleep(not polling)
                self._collect_all()  # what was posted before a rank could see us asleep
            self._ingest(batch)
            if batch:
                try:
                    self._report(batch)
                except Exception:  # the head is gone: keep the simulation side alive
                    log.exception("node %s: cannot report %d items to the head", self.node_id[:8], len(batch))

    def _set_asleep(self, asleep: bool) -> None:
        """Tell the ranks whether a post must wake us (always, when we do not poll)."""
        self._asleep = asleep
        for conn in list(self._conns.values()):  # stop() calls this too, after the serving thread
            for entry in list(conn.rings.values()):
                entry.ring.control[ASLEEP] = int(asleep)
        fence()  # ``asleep`` is visible before the posts are read (a rank fences between its post and its read)

    def _collect_all(self) -> None:
        """Every rank's new posts, when we poll (else only those of the ranks whose socket we read)."""
        if self._poll:
            for conn in self._conns.values():
                self._collect(conn)

    def _collect(self, conn: RankConn) -> None:
        """The blocks that ``conn``'s rank has posted since the last look, to be ingested this round."""
        for ring_id, entry in conn.rings.items():
            entry.collect(conn, ring_id, self._puts)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(True)
        conn = RankConn(sock)
        self._conns[sock.fileno()] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: RankConn, batch: list[Report]) -> None:
        try:
            data = conn.sock.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self._collect(conn)
            self._ingest(batch)  # before its rings are unmapped
            if conn.rank is not None and not conn.closed:
                batch.append(RankLost(conn.rank, self.node_id))
            self._close_conn(conn)
            return
        try:
            messages = conn.reader.feed(data)
        except ProtocolError as exc:  # a corrupt stream: nothing more can be read from it
            self._collect(conn)
            self._ingest(batch)
            batch.append(RankError(conn.rank, self.node_id, f"unreadable stream: {exc}"))
            self._close_conn(conn)
            return
        for message in messages:
            try:
                self._handle(conn, message, batch)
            except Exception as exc:  # a bad message must not stop the node, nor the messages after it
                log.exception("node %s: bad message from rank %s", self.node_id[:8], conn.rank)
                batch.append(RankError(conn.rank, self.node_id, f"{type(exc).__name__}: {exc}"))

    def _handle(self, conn: RankConn, message: RankMessage | Wake | Malformed, batch: list[Report]) -> None:
        self._collect(conn)  # what the rank posted before it sent this (a wake says only that)
        if isinstance(message, Wake):
            return
        if isinstance(message, RingOpened):
            conn.map_ring(message, asleep=self._asleep)
            nbytes = int(np.prod(message.shape)) * np.dtype(message.dtype).itemsize
            rank = conn.rank if conn.rank is not None else -1
            warning = self._budget.add(message.array, rank, nbytes, message.ring_id)
            if warning is not None:
                log.warning("node %s: %s", self.node_id[:8], warning)
                batch.append(NodeWarning(self.node_id, warning))
            return
        self._ingest(batch)  # what a rank says next follows its blocks
        match message:
            case Hello(rank=rank, size=size):
                conn.rank = rank
                self.counts["ranks"] += 1
                conn.send_bytes(self._welcome)
                batch.append(RankJoined(rank, size, self.node_id))
            case Applied() | MonitorBatch() | TriggerFailed() | Publishing():
                batch.append(message)
            case Close(stats=stats):
                conn.closed = True
                batch.append(RankClosed(message.rank, self.node_id, stats))
            case Malformed(error=error):
                batch.append(RankError(conn.rank, self.node_id, error))
            case _:
                raise ProtocolError(f"a rank sent {describe(message)}, which a node actor does not take")

    def _ingest(self, batch: list[Report]) -> None:
        """Copy this round's announced blocks out of their slots: one object per array and step."""
        if not self._puts:
            return
        groups: dict[tuple[str, int], list[PostedSlot]] = {}
        for put in self._puts:
            groups.setdefault((put.entry.array, put.step), []).append(put)
        self._puts = []
        # The selector's order is arbitrary: steps in order (a rank's steps must complete in order), ranks in order.
        for (array, _), puts in sorted(groups.items(), key=lambda group: group[0][1]):
            puts.sort(key=lambda p: p.conn.rank if p.conn.rank is not None else -1)
            views = [p.entry.views[p.slot] for p in puts]
            blocks = views[0] if len(views) == 1 else views
            start, seen = time.perf_counter(), time.time()
            # Both copy the slots before returning: into this node's object store (in situ), or into
            # a task argument shipped to an analytics node (in transit). Either way this actor owns the blocks.
            relay = self._route(array, puts[0].step, sum(v.nbytes for v in views), batch)
            failed = False
            try:
                ref, where = relay(blocks) if relay is not None else (self._put(blocks), self.node_id)
            except Exception as exc:  # the store refused it: the blocks are lost, counted, and said so
                ref, where, failed = None, self.node_id, True
                self._not_stored(array, puts, exc, batch)
            self.counts["put_seconds"] += time.perf_counter() - start
            self.counts["puts"] += 1
            stored = time.time()
            for position, put in enumerate(puts):
                put.entry.ring.freed[put.slot] = put.entry.seen[put.slot]  # after the copy: the rank may write it again
                self._tell(put.conn, free_record(put.ring_id, put.slot))  # wakes a rank waiting for a slot
                if failed:
                    continue
                self.counts["blocks"] += 1
                self.counts["bytes"] += put.entry.ring.slot_size
                batch.append(self._block(put, ref, position if len(puts) > 1 else None, where, (seen, stored)))

    def _not_stored(self, array: str, puts: list[PostedSlot], exc: Exception, batch: list[Report]) -> None:
        """Blocks Ray would not store: counted (``NodeCounts.not_stored``); the first failure of each kind is
        reported, naming the step and ranks, the later ones only counted (a full store refuses every step)."""
        self.counts["not_stored"] += len(puts)
        kind = type(exc).__name__
        if kind in self._store_failures:
            return
        self._store_failures.add(kind)
        log.error("node %s: cannot store %d block(s) of %r: %s: %s", self.node_id[:8], len(puts), array, kind, exc)
        ranks = [p.conn.rank for p in puts]
        first = (str(exc).strip().splitlines() or [""])[0]
        full = kind in ("OutOfDiskError", "ObjectStoreFullError", "OutOfMemoryError")
        hint = (
            " Ray's object store and its spill folder are full: give Ray a larger store (ray start "
            "--object-store-memory) or more spill space, or copy less (select, preprocess, cadence, "
            "backpressure.max_in_flight)."
            if full
            else ""
        )
        said = (
            f"node {self.node_id[:8]} could not store the blocks of {array!r} at step {puts[0].step} from ranks "
            f"{ranks} ({kind}: {first}); later blocks it cannot store are counted in blocks_not_stored.{hint}"
        )
        self.store_error = self.store_error or said
        batch.append(RankError(ranks[0], self.node_id, said))

    def _route(self, array: str, step: int, nbytes: int, batch: list[Report]) -> Callable[[Any], Any] | None:
        """How this step of ``array`` leaves: relayed in transit, or None (in situ); ``auto`` decides per step."""
        if self._relay is None or array in self._relayed:
            return self._relay
        if array not in self._auto:
            return None
        transit, changed = self._auto.in_transit(array, step, nbytes)
        if changed is not None:
            batch.append(changed)
        return self._relay if transit else None

    def _block(self, put: PostedSlot, ref: Any, part: int | None, where: str, hops: tuple[float, float]) -> BlockRecord:
        entry = put.entry
        assert put.conn.rank is not None, "a rank says hello before it opens a ring"
        return BlockRecord(
            entry.array,
            put.step,
            put.time,
            entry.index,
            entry.chunks,
            entry.nblocks,
            entry.dtype.str,
            put.conn.rank,
            self.node_id,
            where,
            ref,
            part,
            put.tags,
            *hops,
        )

    @staticmethod
    def _tell(conn: RankConn, frame: bytes) -> None:
        """Send to a rank unless it has left; a rank that has left needs nothing more.

        A rank's ``close`` returns as soon as it sees its last slot freed in shared memory, so it
        may be gone before this node has told it so: its block is in the store all the same, and
        the 'close' (or end of stream) still unread on the connection reports how it left.
        """
        if conn.closed or conn.deaf:
            return
        try:
            conn.send_bytes(frame)
        except OSError:
            conn.deaf = True

    def _close_conn(self, conn: RankConn) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        self._conns.pop(conn.sock.fileno(), None)
        conn.sock.close()
        for entry in conn.rings.values():
            entry.views.clear()
            entry.ring.close()
        conn.rings.clear()

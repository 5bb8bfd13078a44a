"""The simulation side: one :class:`Bridge` per MPI rank.

This module never imports ray or dask: a rank starts in milliseconds and stays small. The
rank talks to the node actor of its node through a Unix socket and node-local shared
memory (see :mod:`doreisa.runtime._wire`); the node actor puts the data in Ray and owns it.
"""

from __future__ import annotations

import logging
import operator
import os
import socket
import sys
import time as _time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from doreisa.contract import ArraySpec, Contract, parse_contract
from doreisa.errors import BlockMismatchError, BridgeError, LayoutError, RuntimeUnavailableError
from doreisa.runtime import _names
from doreisa.runtime._discovery import connect_to_node
from doreisa.runtime._steer import RankFeedback
from doreisa.runtime._wire import MessageReader, ShmRing, encode, encode_put, recv_one, slot_bytes
from doreisa.runtime.comm import Communicator, world_comm
from doreisa.runtime.layout import BlockPlan, Layout, check_block, default_offset, make_layout
from doreisa.runtime.preprocess import Preprocessor, make_preprocessor
from doreisa.runtime.schedule import ArraySchedule

log = logging.getLogger("doreisa.bridge")

#: A ring has at least this many slots (if ``max_in_flight`` allows), whatever its blocks' size,
#: and at most this many (each slot costs a view on both sides and a counter).
MIN_RING_SLOTS, MAX_RING_SLOTS = 4, 1024
#: Read the socket at least every this many copies, so that the node actor's wake-ups never pile up.
DRAIN_EVERY = 32


def ring_slots(slot_size: int, max_in_flight: int, staging_bytes: int) -> int:
    """Slots of a rank's ring: as many as ``staging_bytes`` holds, within the ring's bounds.

    Never more than ``max_in_flight``: a slot is busy only while its step is in flight.
    """
    return min(max_in_flight, MAX_RING_SLOTS, max(MIN_RING_SLOTS, staging_bytes // slot_size))


@dataclass
class BridgeStats:
    """What one rank did; returned by :meth:`Bridge.close`."""

    calls: int = 0
    published: int = 0
    bytes_copied: int = 0
    skipped: int = 0
    dropped: int = 0
    not_selected: int = 0
    max_in_flight: int = 0
    skipped_steps: list[tuple[str, int]] = field(default_factory=list[tuple[str, int]])

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        return {
            "calls": self.calls,
            "published": self.published,
            "bytes_copied": self.bytes_copied,
            "skipped": self.skipped,
            "dropped": self.dropped,
            "not_selected": self.not_selected,
            "max_in_flight": self.max_in_flight,
            "skipped_steps": [list(s) for s in self.skipped_steps],
        }


@dataclass
class _Array:
    name: str
    ring_id: int
    spec: ArraySpec
    schedule: ArraySchedule
    preprocess: Preprocessor | None
    last_step: int = -1
    box: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    layout: Layout | None = None
    plan: BlockPlan | None = None
    out_shape: tuple[int, ...] = ()
    out_dtype: np.dtype[Any] | None = None
    ring: ShmRing | None = None
    #: a view of each slot; the free slots (the last one freed is reused first: its lines are still
    #: cached); the slots handed to the node actor, in order; and how many times each was handed over
    views: list[np.ndarray[Any, Any]] = field(default_factory=list[np.ndarray[Any, Any]])
    free: list[int] = field(default_factory=list[int])
    pending: list[int] = field(default_factory=list[int])
    used: list[int] = field(default_factory=list[int])
    index: tuple[int, ...] = ()
    #: steps below this are known unwanted (step-count cadence that nothing can change)
    skip_below: int = -1

    def __post_init__(self) -> None:
        self.dtype = np.dtype(self.spec.dtype)

    def reclaim(self) -> bool:
        """Move the slots the node actor has taken (its count caught up with ours) to ``free``; any free?"""
        if not self.pending or self.ring is None:
            return bool(self.free)
        freed, used, last = self.ring.freed, self.used, self.pending[-1]
        if self.free and freed[last] != used[last]:
            return True  # the node takes slots in order: the last one handed over not taken yet, skip the scan
        still: list[int] = []
        for s in self.pending:  # in order: the last one handed over ends on top of ``free``
            (self.free if freed[s] == used[s] else still).append(s)
        self.pending = still
        return bool(self.free)

    def idle(self) -> bool:
        """Has the node actor taken every slot handed to it?"""
        self.reclaim()
        return not self.pending


class Bridge:
    """Publish a rank's blocks to the analytics, as the contract asks.

    Parameters
    ----------
    comm : Communicator, optional
        The simulation's communicator (``mpi4py.MPI.COMM_WORLD`` or a sub-communicator);
        default: ``COMM_WORLD`` if mpi4py is importable, else a single-process stand-in.
        Creating a Bridge is collective over ``comm``.
    run_dir : path, optional
        Rendezvous folder of the run; default: ``$DOREISA_RUN_DIR``, set by ``doreisa run``.
    connect_timeout : float, optional
        Seconds to wait for the runtime; default ``$DOREISA_CONNECT_TIMEOUT`` or 60.

    Raises
    ------
    RuntimeUnavailableError
        If no runtime is reachable before the deadline.

    Notes
    -----
    ``publish`` is collective in the MPI sense: every rank must publish the same arrays at
    the same steps, in the same order, as an SPMD simulation does.
    """

    def __init__(
        self,
        comm: Communicator | None = None,
        *,
        run_dir: str | os.PathLike[str] | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self._comm = comm if comm is not None else world_comm()
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        self.stats = BridgeStats()
        self._closed = False
        self._detached: str | None = None
        self._in_flight: dict[int, set[str]] = {}
        self._reader = MessageReader()
        self._since_drain = 0
        where = run_dir or os.environ.get(_names.ENV_RUN_DIR)
        if not where:
            raise RuntimeUnavailableError(
                f"no doreisa runtime: ${_names.ENV_RUN_DIR} is not set. Start the simulation with "
                "`doreisa run CONTRACT --np N --output DIR -- COMMAND`, or pass run_dir="
            )
        self.run_dir = Path(where)
        timeout = connect_timeout or float(os.environ.get(_names.ENV_CONNECT_TIMEOUT, 60))
        hosts = self._comm.allgather(socket.gethostname())
        local_index = sum(1 for h in hosts[: self.rank] if h == hosts[self.rank])
        self._sock, welcome = connect_to_node(
            self.run_dir, hosts[self.rank], local_index, self.rank, self.size, timeout
        )
        self.node_id: str = welcome["node_id"]
        self.contract: Contract = parse_contract(welcome["contract"], source=f"{self.run_dir}/contract.yaml")
        self._arrays = {
            name: _Array(
                name, i, spec, ArraySchedule(self.contract.cadence_of(name)), make_preprocessor(spec.preprocess)
            )
            for i, (name, spec) in enumerate(self.contract.arrays.items())
        }
        self._steer = RankFeedback(
            self.contract,
            self._comm,
            {name: state.schedule for name, state in self._arrays.items()},
            report=self._report,
            wait=self._wait,
        )

    @property
    def feedback(self) -> Mapping[str, Any]:
        """Steering values sent by the analytics (read-only); every rank sees the same at the same step.

        Examples
        --------
        >>> dt = bridge.feedback.get("dt", dt)  # doctest: +SKIP
        """
        return self._steer.steering

    # -- the simulation's API -------------------------------------------------------------

    def wants(self, name: str, step: int, time: float | None = None) -> bool:
        """Will ``publish(name, ..., step=step)`` copy anything? Lets a simulation skip computing a field."""
        state = self._array(name)
        step = operator.index(step)
        self._begin_step(step, time)
        return state.schedule.wanted(step, time) and self._detached is None

    def publish(
        self,
        name: str,
        block: np.ndarray[Any, Any],
        *,
        step: int,
        time: float | None = None,
        offset: tuple[int, ...] | None = None,
    ) -> bool:
        """Hand this rank's block of array ``name`` at ``step`` to the analytics, if the contract wants it.

        Parameters
        ----------
        name : str
            An array of the contract.
        block : numpy.ndarray
            This rank's block; any memory layout (it is copied, never kept).
        step : int
            Simulation step, strictly increasing per array.
        time : float, optional
            Simulation time; required when the array's cadence counts time.
        offset : tuple of int, optional
            Global index of the block's first element; default: from the contract's uniform
            ``block`` and the rank (row-major). Must not change during the run.

        Returns
        -------
        bool
            True if data was copied for the analytics; False if the step is not wanted, this
            rank's block is outside the selected region, or the step was skipped or dropped
            (counted in :attr:`stats`).

        Raises
        ------
        BlockMismatchError
            Unknown array, wrong dtype or shape, changed offset, steps out of order.
        LayoutError
            At the first publish of an array, if the ranks' blocks do not tile it.
        """
        self.stats.calls += 1
        state = self._arrays.get(name)
        if state is not None and type(step) is int and state.last_step < step:  # the common case: a valid step
            state.last_step = step
            if step < state.skip_below:
                return False  # fast path: a step that nothing can make wanted
        elif state is None:
            self._array(name)  # raises with the list of known arrays
            raise AssertionError("unreachable")
        else:
            step = self._check_step(state, step)
        if time is not None:
            time = float(time)  # numpy scalars are not JSON
        if state.layout is None:
            self._setup_layout(state, block, offset)
        self._begin_step(step, time)
        assert state.box is not None, "layout is set up at the first publish"
        self._steer.monitor(name, block, state.box, step, time)
        if not state.schedule.wanted(step, time):
            return self._unwanted(state, step, time)
        shape = state.box[1]
        if not (type(block) is np.ndarray and block.shape == shape and block.dtype == state.dtype and offset is None):
            self._check_block(state, block, offset, step)  # raises with what is wrong, if anything is
        if self._closed or self._detached is not None:
            return self._refuse()
        if not self._make_room(name, step):
            return False
        self._steer.handed_over(name, step)
        if state.plan is None:
            self.stats.not_selected += 1
            return False
        return self._copy(state, block, step, time)

    def _refuse(self) -> bool:
        if self._closed:
            raise BridgeError("publish() after close()")
        if self.contract.backpressure.policy == "skip":
            self._comm.allgather(False)  # the others are in this collective: make them skip too
        self.stats.dropped += 1
        return False

    def _unwanted(self, state: _Array, step: int, time: float | None) -> bool:
        if state.schedule.cadence.by_time:
            if time is None:
                raise BlockMismatchError(f"array {state.name!r} has a simulation-time cadence: publish() needs time=")
        elif self._steer.fixed_cadence(state.name):  # the next steps up to the next wanted one take the fast path
            nxt = state.schedule.next_wanted(step)
            state.skip_below = sys.maxsize if nxt is None else nxt
        return False

    def close(self) -> dict[str, Any]:
        """Wait until every published block is handed over to Ray, then disconnect.

        Returns
        -------
        dict
            This rank's counts: calls, published, bytes_copied, skipped, dropped, not_selected.
        """
        if self._closed:
            return self.stats.as_dict()
        self._closed = True
        if self._detached is None:
            try:
                self._wait(
                    lambda: all(s.idle() for s in self._arrays.values()),
                    self.contract.timeouts.step,
                    "the node actor to take the last blocks",
                )
                self._sock.sendall(encode({"t": "close", "rank": self.rank, "stats": self.stats.as_dict()}))
            except (OSError, BridgeError) as exc:
                log.warning("rank %d: close() could not confirm the hand-over: %s", self.rank, exc)
        self._sock.close()
        for state in self._arrays.values():
            if state.ring is not None:
                state.views = []
                state.ring.close(unlink=True)
        return self.stats.as_dict()

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checks ---------------------------------------------------------------------------

    def _array(self, name: str) -> _Array:
        try:
            return self._arrays[name]
        except KeyError:
            raise BlockMismatchError(
                f"rank {self.rank}: array {name!r} is not in the contract; known arrays: {sorted(self._arrays)}"
            ) from None

    def _check_step(self, state: _Array, step: int) -> int:
        try:
            value = operator.index(step)
        except TypeError:
            raise BlockMismatchError(f"rank {self.rank}: step must be an integer, got {step!r}") from None
        if value < 0:
            raise BlockMismatchError(f"rank {self.rank}: step must be >= 0, got {value}")
        if value <= state.last_step:
            raise BlockMismatchError(
                f"rank {self.rank}: array {state.name!r} step {value} after step {state.last_step}; steps must increase"
            )
        state.last_step = value
        return value

    def _block_problem(self, state: _Array, block: Any) -> str | None:
        if not isinstance(block, np.ndarray):
            return f"block must be a numpy array, got {type(block).__name__}"
        if block.dtype != state.dtype:
            return f"block dtype is {block.dtype}; the contract says {state.spec.dtype}"
        if block.ndim != state.spec.ndim:
            return f"block is {block.ndim}-D; the contract's array is {state.spec.ndim}-D"
        return None

    def _check_block(self, state: _Array, block: Any, offset: tuple[int, ...] | None, step: int) -> None:
        problem = self._block_problem(state, block)
        assert state.box is not None, "layout is set up at the first publish"
        if problem is None and block.shape != state.box[1]:
            problem = f"block shape {block.shape} differs from its shape at the first publish, {state.box[1]}"
        if problem is None and offset is not None and tuple(offset) != state.box[0]:
            problem = f"offset {tuple(offset)} differs from the first publish, {state.box[0]}; it must stay fixed"
        if problem:
            raise BlockMismatchError(f"rank {self.rank}: array {state.name!r} step {step}: {problem}")

    def _setup_layout(self, state: _Array, block: Any, offset: tuple[int, ...] | None) -> None:
        """Collective: agree on every rank's block, check the tiling, plan this rank's copy."""
        block_problem = problem = self._block_problem(state, block)
        box = None
        if problem is None:
            try:
                where = (
                    tuple(int(o) for o in offset)
                    if offset is not None
                    else default_offset(state.spec, self.rank, self.size, state.name)
                )
                box = (where, tuple(block.shape))
                check_block(state.spec, state.name, self.rank, *box)
            except LayoutError as exc:
                problem = str(exc).removeprefix(f"rank {self.rank}: ")
        gathered = self._comm.allgather((box, problem))
        problems = [f"rank {r}: {p}" for r, (_, p) in enumerate(gathered) if p]
        if block_problem is not None:
            raise BlockMismatchError(f"rank {self.rank}: array {state.name!r}: {block_problem}")
        if problems:
            raise LayoutError(f"array {state.name!r}: " + "; ".join(problems))
        layout = make_layout(state.spec, state.name, [b for b, _ in gathered])
        state.box, state.layout, state.plan = box, layout, layout.plans[self.rank]
        if state.plan is not None:
            shape = state.plan.shape
            dtype = state.dtype
            if state.preprocess is not None:
                shape, dtype = state.preprocess.shape_of(shape), state.preprocess.dtype_of(dtype)
            state.out_shape, state.out_dtype = shape, dtype

    # -- data path ------------------------------------------------------------------------

    def _make_room(self, name: str, step: int) -> bool:
        policy = self.contract.backpressure
        # Credits only grow while unread, so stale counts that show room are right: read the socket
        # only when they show none, or every DRAIN_EVERY copies (free slots are seen in shared memory).
        self._since_drain += 1
        if self._since_drain >= DRAIN_EVERY or len(self._in_flight) >= policy.max_in_flight:
            self._drain()
        if self._detached is not None and policy.policy == "block":
            self.stats.dropped += 1
            return False
        if policy.policy == "block" and (len(self._in_flight) < policy.max_in_flight or step in self._in_flight):
            return True
        room = lambda: step in self._in_flight or len(self._in_flight) < policy.max_in_flight  # noqa: E731
        if policy.policy == "skip":
            if all(self._comm.allgather(room())):
                return True
            self.stats.skipped += 1
            self.stats.skipped_steps.append((name, step))
            return False
        try:
            self._wait(room, self.contract.timeouts.block, f"room for step {step} (backpressure: block)")
        except BridgeError as exc:
            self._detach(str(exc))
            self.stats.dropped += 1
            return False
        return True

    def _copy(self, state: _Array, block: np.ndarray[Any, Any], step: int, time: float | None) -> bool:
        assert state.plan is not None and state.out_dtype is not None and state.layout is not None
        if state.ring is None:
            self._open_ring(state)
        assert state.ring is not None
        if not state.reclaim():
            try:
                self._wait(state.reclaim, self.contract.timeouts.block, "a free shared memory slot")
            except BridgeError as exc:
                self._detach(str(exc))
                self.stats.dropped += 1
                return False
        part = block[state.plan.local]
        if state.preprocess is not None:
            part = state.preprocess.apply(part)
            if part.shape != state.out_shape or part.dtype != state.out_dtype:
                raise BlockMismatchError(
                    f"rank {self.rank}: preprocess {state.preprocess.name!r} of {state.name!r} returned "
                    f"{part.dtype}{list(part.shape)}; expected {state.out_dtype}{list(state.out_shape)} "
                    "(declare a changed dtype with params.dtype)"
                )
        slot = state.free.pop()
        dst = state.views[slot]
        np.copyto(dst, part, casting="no")
        state.used[slot] += 1
        state.pending.append(slot)
        if not self._send_bytes(encode_put(state.ring_id, slot, step, time)):
            self.stats.dropped += 1
            return False
        self._in_flight.setdefault(step, set()).add(state.name)
        self.stats.max_in_flight = max(self.stats.max_in_flight, len(self._in_flight))
        self.stats.published += 1
        self.stats.bytes_copied += dst.nbytes
        return True

    def _open_ring(self, state: _Array) -> None:
        assert state.out_dtype is not None and state.layout is not None and state.plan is not None
        size = slot_bytes(int(np.prod(state.out_shape)) * state.out_dtype.itemsize)
        # a burst of steps faster than the node actor ingests them fills the ring before publish waits
        backpressure = self.contract.backpressure
        slots = ring_slots(size, backpressure.max_in_flight, backpressure.staging_mb << 20)
        base = _names.SHM_DIR if os.path.isdir(_names.SHM_DIR) else str(self.run_dir)
        path = os.path.join(base, f"{_names.SHM_PREFIX}{self.run_dir.name}-{self.rank}-{state.name}")
        state.ring = ShmRing(path, slots, size, create=True)
        state.views = state.ring.views(state.out_shape, state.out_dtype)
        state.free = list(range(slots - 1, -1, -1))
        state.used = [0] * slots
        # preprocess may add dims
        state.index = state.plan.index + (0,) * (len(state.out_shape) - len(state.plan.index))
        self._send(
            {
                "t": "ring",
                "a": state.name,
                "id": state.ring_id,
                "i": list(state.index),
                "path": path,
                "slots": slots,
                "slot_size": size,
                "shape": list(state.out_shape),
                "dtype": state.out_dtype.str,
                "chunks": _out_chunks(state),
                "n": state.layout.nchunks,
            }
        )

    def _drain(self) -> None:
        self._since_drain = 0
        for message in self._reader.feed(b""):  # left over from recv_one
            self._handle(message)
        while True:
            try:
                data = self._sock.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._detach(f"lost the node actor: {exc}")
                return
            if not data:
                self._detach("the node actor closed the connection")
                return
            for message in self._reader.feed(data):
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "done":  # ("free" only wakes a rank waiting for a slot: the counters say which)
            self._steer.on_done(message["items"], message.get("decisions", []))
            for name, step in message["items"]:
                pending = self._in_flight.get(step)
                if pending is not None:
                    pending.discard(name)
                    if not pending:
                        del self._in_flight[step]

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = _time.monotonic() + timeout
        while not condition():
            remaining = deadline - _time.monotonic()
            if remaining <= 0:
                raise BridgeError(f"rank {self.rank}: waited {timeout:g} s for {what}; the analytics do not respond")
            try:
                self._handle(recv_one(self._sock, self._reader, min(remaining, 1.0)))
            except TimeoutError:
                continue
            except (EOFError, OSError) as exc:
                raise BridgeError(f"rank {self.rank}: lost the node actor while waiting for {what}: {exc}") from exc
            self._drain()

    def _begin_step(self, step: int, time: float | None = None) -> None:
        if self._steer.active and self.rank == 0 and step > self._steer.step:
            self._drain()  # rank 0 broadcasts the decisions it has received
        try:
            self._steer.begin_step(step, time)
        except BridgeError as exc:
            self._detach(str(exc))

    def _send(self, message: dict[str, Any]) -> bool:
        return self._send_bytes(encode(message))

    def _send_bytes(self, frame: bytes) -> bool:
        if self._detached is not None:
            return False
        try:
            self._sock.sendall(frame)
        except OSError as exc:
            self._detach(f"lost the node actor: {exc}")
            return False
        return True

    def _report(self, event: dict[str, Any]) -> None:
        self._send({"t": "event", "e": event})

    def _detach(self, reason: str) -> None:
        if self._detached is None:
            self._detached = reason
            self._steer.give_up()
            log.warning(
                "rank %d: analytics unavailable (%s); the simulation goes on and further steps are dropped and counted",
                self.rank,
                reason,
            )


def _out_chunks(state: _Array) -> list[list[int]]:
    assert state.layout is not None
    chunks = state.layout.chunks
    if state.preprocess is not None:
        chunks = state.preprocess.chunks_of(chunks)
    return [list(c) for c in chunks]

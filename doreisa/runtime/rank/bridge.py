"""The simulation side: one :class:`Bridge` per MPI rank.

This module never imports ray or dask: a rank starts in milliseconds and stays small. The
rank talks to the node actor of its node through a Unix socket and node-local shared
memory (:mod:`doreisa.runtime.rank.transport`, :mod:`doreisa.runtime.protocol`); the node actor puts the
data in Ray and owns it.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from doreisa.contract import Contract
from doreisa.errors import BlockMismatchError, BridgeError, LayoutError, RuntimeUnavailableError
from doreisa.plugins import make_preprocessor
from doreisa.runtime import _names
from doreisa.runtime.cadence import ArraySchedule
from doreisa.runtime.layout import check_block, default_offset, make_layout
from doreisa.runtime.protocol import RankMessage, RankStats
from doreisa.runtime.rank.comm import Communicator, world_comm
from doreisa.runtime.rank.discovery import connect_to_node
from doreisa.runtime.rank.steering import RankFeedback
from doreisa.runtime.rank.transport import ArrayState, NodeLink, log


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
    #: posts that found the node actor asleep and woke it with a system call (the others cost none)
    wakes: int = 0
    skipped_steps: list[tuple[str, int]] = field(default_factory=list[tuple[str, int]])

    def record(self) -> RankStats:
        """A frozen copy, for the node actor."""
        return RankStats(
            self.calls,
            self.published,
            self.bytes_copied,
            self.skipped,
            self.dropped,
            self.not_selected,
            self.max_in_flight,
            self.wakes,
            tuple(self.skipped_steps),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        return {**dataclasses.asdict(self), "skipped_steps": [list(s) for s in self.skipped_steps]}


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
        sock, welcome = connect_to_node(self.run_dir, hosts[self.rank], local_index, self.rank, self.size, timeout)
        self._link = NodeLink(
            sock,
            self.rank,
            on_done=lambda done: self._steer.on_done(done.items, done.decisions),
            on_detach=lambda: self._steer.give_up(),
        )
        self.node_id: str = welcome.node_id
        self.contract: Contract = Contract.from_plain(welcome.contract)
        self._arrays = {
            name: ArrayState(
                name,
                i,
                spec,
                ArraySchedule(self.contract.cadence_of(name)),
                None
                if spec.preprocess is None
                else make_preprocessor(spec.preprocess.function, spec.preprocess.params),
            )
            for i, (name, spec) in enumerate(self.contract.arrays.items())
        }
        self._steer = RankFeedback(
            self.contract,
            self._comm,
            {name: state.schedule for name, state in self._arrays.items()},
            report=self._report,
            wait=self._link.wait,
        )
        self._find_fixed_cadences()

    def _find_fixed_cadences(self) -> None:
        """Arrays whose step cadence nothing can change: their next wanted step is known in advance."""
        for name, state in self._arrays.items():
            cadence = state.schedule.cadence
            if cadence.every is not None and self._steer.fixed_cadence(name):
                state.stride = cadence.every
                state.last_wanted = math.inf if cadence.stop is None else cadence.stop

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
        return state.schedule.wanted(step, time) and self._link.detached is None

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
            known = step == state.skip_below  # the step a fixed cadence wants next: no steering hook to run
        elif state is None:
            self._array(name)  # raises with the list of known arrays
            raise AssertionError("unreachable")
        else:
            step, known = self._check_step(state, step), False
        if time is not None:
            time = float(time)  # a numpy scalar would travel as an object, not a number
        if not (known or self._steered_wanted(state, block, step, time, offset)):
            return self._unwanted(state, step, time)
        if state.stride:  # a fixed step cadence: the next wanted step is known, the steps before it take the fast path
            following = step + state.stride
            state.skip_below = following if following <= state.last_wanted else sys.maxsize
        assert state.box is not None, "layout is set up at the first publish"
        shape = state.box[1]
        if not (type(block) is np.ndarray and block.shape == shape and block.dtype == state.dtype and offset is None):
            self._check_block(state, block, offset, step)  # raises with what is wrong, if anything is
        if self._closed or self._link.detached is not None:
            return self._refuse()
        if not self._make_room(name, step):
            return False
        if not known:
            self._steer.handed_over(name, step)
        if state.plan is None:
            self.stats.not_selected += 1
            return False
        return self._copy(state, block, step, time)

    def _steered_wanted(
        self, state: ArrayState, block: Any, step: int, time: float | None, offset: tuple[int, ...] | None
    ) -> bool:
        """The full path: the layout at the first publish, the steering hooks, then the cadence. Wanted?"""
        if state.layout is None:
            self._setup_layout(state, block, offset)
        self._begin_step(step, time)
        assert state.box is not None, "layout is set up at the first publish"
        self._steer.monitor(state.name, block, state.box, step, time)
        return state.schedule.wanted(step, time)

    def _refuse(self) -> bool:
        if self._closed:
            raise BridgeError("publish() after close()")
        if self.contract.backpressure.policy == "skip":
            self._comm.allgather(False)  # the others are in this collective: make them skip too
        self.stats.dropped += 1
        return False

    def _unwanted(self, state: ArrayState, step: int, time: float | None) -> bool:
        if state.schedule.cadence.by_time:
            if time is None:
                raise BlockMismatchError(f"array {state.name!r} has a simulation-time cadence: publish() needs time=")
        elif state.stride:  # the next steps up to the next wanted one take the fast path
            nxt = state.schedule.next_wanted(step)
            state.skip_below = sys.maxsize if nxt is None else nxt
        return False

    def close(self) -> dict[str, Any]:
        """Wait until every published block is handed over to Ray, then disconnect.

        Returns
        -------
        dict
            This rank's counts: calls, published, bytes_copied, skipped, dropped, not_selected,
            max_in_flight, wakes, skipped_steps.
        """
        self.stats.wakes = self._link.wakes
        if self._closed:
            return self.stats.as_dict()
        self._closed = True
        self._steer.flush_monitors()  # before the node actor hears 'close'
        idle = lambda: all(s.idle() for s in self._arrays.values())  # noqa: E731
        self._link.close(idle, self.contract.timeouts.step, self.stats.record())
        lost = sum(len(s.pending) for s in self._arrays.values() if not s.idle())
        if lost:  # posted, never taken: the node actor is gone or does not respond
            log.warning(
                "rank %d: %d block(s) handed over were never taken by the node actor: counted dropped", self.rank, lost
            )
            self.stats.published -= lost
            self.stats.dropped += lost
        for state in self._arrays.values():
            state.close_ring()
        return self.stats.as_dict()

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checks ---------------------------------------------------------------------------

    def _array(self, name: str) -> ArrayState:
        try:
            return self._arrays[name]
        except KeyError:
            raise BlockMismatchError(
                f"rank {self.rank}: array {name!r} is not in the contract; known arrays: {sorted(self._arrays)}"
            ) from None

    def _check_step(self, state: ArrayState, step: int) -> int:
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

    def _block_problem(self, state: ArrayState, block: Any) -> str | None:
        if not isinstance(block, np.ndarray):
            return f"block must be a numpy array, got {type(block).__name__}"
        if block.dtype != state.dtype:
            return f"block dtype is {block.dtype}; the contract says {state.spec.dtype}"
        if block.ndim != state.spec.ndim:
            return f"block is {block.ndim}-D; the contract's array is {state.spec.ndim}-D"
        return None

    def _check_block(self, state: ArrayState, block: Any, offset: tuple[int, ...] | None, step: int) -> None:
        problem = self._block_problem(state, block)
        assert state.box is not None, "layout is set up at the first publish"
        if problem is None and block.shape != state.box[1]:
            problem = f"block shape {block.shape} differs from its shape at the first publish, {state.box[1]}"
        if problem is None and offset is not None and tuple(offset) != state.box[0]:
            problem = f"offset {tuple(offset)} differs from the first publish, {state.box[0]}; it must stay fixed"
        if problem:
            raise BlockMismatchError(f"rank {self.rank}: array {state.name!r} step {step}: {problem}")

    def _setup_layout(self, state: ArrayState, block: Any, offset: tuple[int, ...] | None) -> None:
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
            state.whole = box is not None and shape == box[1]
            dtype = state.dtype
            if state.preprocess is not None:
                shape, dtype = state.preprocess.shape_of(shape), state.preprocess.dtype_of(dtype)
            state.out_shape, state.out_dtype = shape, dtype

    # -- data path ------------------------------------------------------------------------

    def _make_room(self, name: str, step: int) -> bool:
        policy, link = self.contract.backpressure, self._link
        in_flight = link.in_flight
        # Credits only grow while unread, so stale counts that show room are right: read the socket
        # only when they show none, or every DRAIN_EVERY copies (free slots are seen in shared memory).
        if link.drain_due() or len(in_flight) >= policy.max_in_flight:
            link.drain()
        if link.detached is not None and policy.policy == "block":
            self.stats.dropped += 1
            return False
        if policy.policy == "block" and (len(in_flight) < policy.max_in_flight or step in in_flight):
            return True
        room = lambda: step in in_flight or len(in_flight) < policy.max_in_flight  # noqa: E731
        if policy.policy == "skip":
            if all(self._comm.allgather(room())):
                return True
            self.stats.skipped += 1
            self.stats.skipped_steps.append((name, step))
            return False
        return self._wait_or_drop(room, f"room for step {step} (backpressure: block)")

    def _wait_or_drop(self, ready: Callable[[], bool], what: str) -> bool:
        """Wait up to ``timeouts.block`` for ``ready``; past it, detach and count the step dropped (False)."""
        try:
            self._link.wait(ready, self.contract.timeouts.block, what)
        except BridgeError as exc:
            self._link.detach(str(exc))
            self.stats.dropped += 1
            return False
        return True

    def _copy(self, state: ArrayState, block: np.ndarray[Any, Any], step: int, time: float | None) -> bool:
        assert state.plan is not None and state.out_dtype is not None and state.layout is not None
        if state.ring is None:
            self._link.open_ring(state, self.run_dir, self.contract.backpressure)
        if not state.reclaim() and not self._wait_or_drop(state.reclaim, "a free shared memory slot"):
            return False
        part = block if state.whole else block[state.plan.local]
        if state.preprocess is not None:
            part = state.preprocess.apply(part)
            if part.shape != state.out_shape or part.dtype != state.out_dtype:
                raise BlockMismatchError(
                    f"rank {self.rank}: preprocess {_operator_name(state)!r} of {state.name!r} returned "
                    f"{part.dtype}{list(part.shape)}; expected {state.out_dtype}{list(state.out_shape)} "
                    "(declare a changed dtype with params.dtype)"
                )
        slot = state.free.pop()
        dst = state.views[slot]
        link = self._link
        ring = link.label(state, slot, step, time)  # the bookkeeping before the copy, which leaves the caches cold
        stats = self.stats
        stats.max_in_flight = max(stats.max_in_flight, len(link.in_flight))
        # dtype and shape are checked above: a plain assignment, which costs half np.copyto's call when cold
        dst[...] = part
        if not link.post(ring, slot):  # the node actor is gone: the slot will never be taken
            state.pending.pop()
            stats.dropped += 1
            return False
        stats.published += 1
        stats.bytes_copied += dst.nbytes
        return True

    def _begin_step(self, step: int, time: float | None = None) -> None:
        if self._steer.active and self.rank == 0 and step > self._steer.step:
            self._link.drain()  # rank 0 broadcasts the decisions it has received
        try:
            self._steer.begin_step(step, time)
        except BridgeError as exc:
            self._link.detach(str(exc))

    def _report(self, event: RankMessage) -> None:
        self._link.send(event)


def _operator_name(state: ArrayState) -> str:
    return "" if state.spec.preprocess is None else state.spec.preprocess.function

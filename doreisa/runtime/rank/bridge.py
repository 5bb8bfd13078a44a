"""The simulation side: one :class:`Bridge` per MPI rank.

This module never imports ray, dask, pydantic or YAML: a rank starts in milliseconds and stays small,
running the plan the runtime compiled from the contract (:mod:`doreisa.runtime.plan`). The
bridge decides what to copy (the contract's cadence, region and backpressure) and checks
what it is given; a :class:`~doreisa.runtime.rank.transport.Transport` moves the copies to the
runtime (by default :class:`~doreisa.runtime.rank.shm.ShmTransport`: node-local shared memory
and a socket to the node actor, which puts the data in Ray and owns it).
"""

from __future__ import annotations

import math
import operator
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np

from doreisa.errors import BlockMismatchError, BridgeError, RuntimeUnavailableError
from doreisa.runtime import _names
from doreisa.runtime.protocol import Done, Publishing, RankMessage
from doreisa.runtime.rank.arrays import NEVER, ArrayRun, InFlight, agree_on_layout, check_same_block, checked_step
from doreisa.runtime.rank.comm import Communicator, world_comm
from doreisa.runtime.rank.device import Block, DeviceBlock, DeviceCopier, Devices, copied_part
from doreisa.runtime.rank.shm import ShmTransport, log
from doreisa.runtime.rank.stats import BridgeStats
from doreisa.runtime.rank.steering import RankFeedback
from doreisa.runtime.rank.transport import Transport

if TYPE_CHECKING:
    from doreisa.contract import Contract


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
    transport : Transport, optional
        How blocks leave this rank; default: the shared memory transport of ``doreisa run``.
        :class:`~doreisa.runtime.rank.inprocess.InProcessTransport` keeps them in this process
        (tests). Experimental: the Transport protocol may still change before 1.0.
    copier : DeviceCopier, optional
        How blocks in GPU memory are read; default: CuPy, imported at the first such block
        (``doreisa[gpu]``). Experimental; see docs/gpu.md.

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
        transport: Transport | None = None,
        copier: DeviceCopier | None = None,
    ) -> None:
        self._comm = comm if comm is not None else world_comm()
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        self.stats = BridgeStats()
        self._closed = False
        self._devices = Devices(copier)
        self._link = transport if transport is not None else self._connect(run_dir, connect_timeout)
        self.node_id: str = self._link.welcome.node_id
        self._plan = plan = self._link.welcome.plan
        self._contract: Contract | None = None
        self._in_flight = InFlight()
        self._arrays = ArrayRun.all_of(plan)
        #: what the simulation publishes: every array but the views, which are copied from those
        self._published = {name: run for name, run in self._arrays.items() if run.array.spec.of is None}
        self._steer = RankFeedback(
            plan,
            self._comm,
            {name: run.schedule for name, run in self._arrays.items()},
            report=self._report,
            wait=self._link.wait,
        )
        self._link.bind(rank=self.rank, on_done=self._on_done, on_detach=self._steer.give_up)
        self._find_fixed_cadences()

    def _connect(self, run_dir: str | os.PathLike[str] | None, timeout: float | None) -> ShmTransport:
        where = run_dir or os.environ.get(_names.ENV_RUN_DIR)
        if not where:
            raise RuntimeUnavailableError(
                f"no doreisa runtime: ${_names.ENV_RUN_DIR} is not set. Start the simulation with "
                "`doreisa run CONTRACT --np N --output DIR -- COMMAND`, or pass run_dir="
            )
        self.run_dir = Path(where)
        hosts = self._comm.allgather(socket.gethostname())
        return ShmTransport.connect(
            self.run_dir, hosts, self.rank, timeout or float(os.environ.get(_names.ENV_CONNECT_TIMEOUT, 60))
        )

    def _find_fixed_cadences(self) -> None:
        """Arrays whose step cadence nothing can change: their next wanted step is known in advance."""
        for name, run in self._arrays.items():
            cadence = run.schedule.cadence
            if cadence.every is not None and self._steer.fixed_cadence(name):
                run.stride = cadence.every
                run.last_wanted = math.inf if cadence.stop is None else cadence.stop
            elif cadence.never and self._steer.fixed_cadence(name):
                run.stride, run.last_wanted = 1, -1  # after the first publish, every step takes the fast path

    def _on_done(self, done: Done) -> None:
        self._steer.on_done(done.items, done.decisions)
        self._in_flight.done(done.items)

    @property
    def contract(self) -> Contract:
        """The run's contract, as loaded where the run started; built at first use (pydantic)."""
        if self._contract is None:
            from doreisa.contract import Contract  # the bridge itself runs on the compiled plan

            self._contract = Contract.from_plain(self._link.welcome.contract)
        return self._contract

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
        run = self._array(name)
        step = operator.index(step)
        self._begin_step(step, time)
        wanted = run.schedule.wanted(step, time) or any(v.schedule.wanted(step, time) for v in run.views)
        return wanted and self._link.detached is None

    def publish(
        self,
        name: str,
        block: Block,
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
        block : numpy.ndarray or device array
            This rank's block; any memory layout (it is copied, never kept). In GPU memory
            (CuPy, PyTorch, Numba, JAX): reduced on the device, then copied once (docs/gpu.md).
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
        run = self._published.get(name)
        if (
            run is not None
            and type(step) is int
            and run.last_step < step < run.skip_below
            and (not run.views or run.views_skip(step))
        ):
            run.last_step = step
            return False  # fast path: a valid step that nothing can make wanted
        started = perf_counter()
        try:
            block = self._devices.block(block)  # a device array is described once, for the views too
            copied = self._publish(name, block, step, time, offset)
            for view in run.views if run is not None else ():  # the views of the array, from the same block
                copied = self._publish(view.array.name, block, step, time, offset, view=True) or copied
            return copied
        finally:
            self.stats.publish_s += perf_counter() - started

    def _publish(  # the arguments of publish, and whether this is a view of the array published
        self,
        name: str,
        block: Any,
        step: int,
        time: float | None,
        offset: tuple[int, ...] | None,
        *,
        view: bool = False,
    ) -> bool:
        run = self._array(name)  # raises with the list of known arrays
        if run.array.spec.of is not None and not view:
            raise BlockMismatchError(
                f"rank {self.rank}: array {name!r} is a view of {run.array.spec.of!r}: publish "
                f"{run.array.spec.of!r}, and {name!r} is copied from it"
            )
        step = checked_step(self.rank, run, step)
        run.last_step = step
        known = step == run.skip_below  # the step a fixed cadence wants next: no steering hook to run
        if time is not None:
            time = float(time)  # a numpy scalar would travel as an object, not a number
        if not (known or self._steered_wanted(run, block, step, time, offset)):
            return self._unwanted(run, step, time)
        if run.stride:  # a fixed step cadence: the next wanted step is known, the steps before it take the fast path
            following = step + run.stride
            run.skip_below = following if following <= run.last_wanted else NEVER
        copy = run.copy
        assert copy is not None, "the layout is agreed at the first publish"
        if not (
            type(block) is np.ndarray
            and block.shape == copy.box[1]
            and block.dtype == run.array.dtype
            and offset is None
        ):
            check_same_block(self.rank, run, block, offset, step)  # raises with what is wrong, if anything is
        if self._closed or self._link.detached is not None:
            return self._refuse()
        if not self._make_room(name, step):
            return False
        if not known:
            self._steer.handed_over(name, step)
        if copy.part is None:
            self.stats.not_selected += 1
            return False
        return self._copy(run, block, step, time)

    def _steered_wanted(
        self, run: ArrayRun, block: Any, step: int, time: float | None, offset: tuple[int, ...] | None
    ) -> bool:
        """The full path: the layout at the first publish, the steering hooks, then the cadence. Wanted?"""
        if run.copy is None:
            self._link.send(Publishing(self.rank, run.array.name))  # the runtime can name a rank that never comes
            run.copy = agree_on_layout(self._comm, run.array, block, offset)
        self._begin_step(step, time)
        self._steer.monitor(run.array.name, block, run.copy.box, step, time)
        return run.schedule.wanted(step, time)

    def _refuse(self) -> bool:
        if self._closed:
            raise BridgeError("publish() after close()")
        if self._plan.backpressure.policy == "skip":
            self._comm.allgather(False)  # the others are in this collective: make them skip too
        self.stats.dropped += 1
        return False

    def _unwanted(self, run: ArrayRun, step: int, time: float | None) -> bool:
        if run.schedule.cadence.by_time:
            if time is None:
                raise BlockMismatchError(
                    f"array {run.array.name!r} has a simulation-time cadence: publish() needs time="
                )
        elif run.stride:  # the next steps up to the next wanted one take the fast path
            nxt = run.schedule.next_wanted(step)
            run.skip_below = NEVER if nxt is None else nxt
        return False

    def close(self) -> dict[str, Any]:
        """Wait until every published block is handed over to the runtime, then disconnect.

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
        self._steer.finish()  # before the runtime hears 'close'
        lost, lost_bytes = self._link.close(self.stats.record(), self._plan.timeouts.step)
        if lost:  # posted, never taken: the node actor is gone or does not respond
            log.warning(
                "rank %d: %d block(s) handed over were never taken by the node actor: counted dropped", self.rank, lost
            )
            self.stats.published -= lost
            self.stats.bytes_copied -= lost_bytes
            self.stats.dropped += lost
        return self.stats.as_dict()

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _array(self, name: str) -> ArrayRun:
        try:
            return self._arrays[name]
        except KeyError:
            raise BlockMismatchError(
                f"rank {self.rank}: array {name!r} is not in the contract; known arrays: {sorted(self._arrays)}"
            ) from None

    # -- data path ------------------------------------------------------------------------

    def _make_room(self, name: str, step: int) -> bool:
        policy, link, in_flight = self._plan.backpressure, self._link, self._in_flight
        # Credits only grow while unread, so stale counts that show room are right: read the socket
        # only when they show none, or every so many copies (free slots are seen in shared memory).
        link.poll(now=len(in_flight) >= policy.max_in_flight and policy.policy != "latest")
        if policy.policy == "latest":  # never waits: the runtime drops the oldest step waiting for the analytics
            return True
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
            self._link.wait(ready, self._plan.timeouts.block, what)
        except BridgeError as exc:
            self._link.detach(str(exc))
            self.stats.dropped += 1
            return False
        return True

    def _copy(self, run: ArrayRun, block: Any, step: int, time: float | None) -> bool:
        copy, array = run.copy, run.array
        assert copy is not None, "the layout is agreed at the first publish"
        part = copied_part(array, copy, block, self.rank)  # before any staging is opened: an error leaves nothing
        staging = run.staging
        if staging is None:
            staging = run.staging = self._link.open(array, copy, self._plan.backpressure)
        if not staging.has_slot() and not self._wait_or_drop(staging.has_slot, "a free staging slot"):
            return False
        self._in_flight.add(step, array.name)
        dst = staging.reserve(step, time, self._steer.tags)  # the bookkeeping before the copy, which leaves caches cold
        stats = self.stats
        stats.max_in_flight = max(stats.max_in_flight, len(self._in_flight))
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

    def _begin_step(self, step: int, time: float | None = None) -> None:
        if self._steer.active and self.rank == 0 and step > self._steer.step:
            self._link.poll()  # rank 0 broadcasts the decisions it has received
        try:
            self._steer.begin_step(step, time)
        except BridgeError as exc:
            self._link.detach(str(exc))

    def _report(self, event: RankMessage) -> None:
        self._link.send(event)

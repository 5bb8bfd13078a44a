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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np

from doreisa.errors import BlockMismatchError, BridgeError, RuntimeUnavailableError
from doreisa.runtime import _names
from doreisa.runtime.protocol import Done, Publishing, RankMessage
from doreisa.runtime.rank.arrays import NEVER, ArrayRun, agree_on_layout, check_same_blocks, checked_step
from doreisa.runtime.rank.comm import Communicator, sub_comm, world_comm
from doreisa.runtime.rank.datapath import DataPath
from doreisa.runtime.rank.device import Block, DeviceCopier, Devices
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
    the same steps, in the same order, as an SPMD simulation does; an array the contract gives
    to a subset of the ranks (``ranks:``) only among those ranks.
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
        self._arrays = ArrayRun.all_of(plan, self._communicators())
        #: what the simulation publishes: every array but the views, which are copied from those
        self._published = {name: run for name, run in self._arrays.items() if run.array.spec.of is None}
        self._steer = RankFeedback(
            plan,
            self._comm,
            {name: run.schedule for name, run in self._arrays.items()},
            report=self._report,
            wait=self._link.wait,
        )
        self._path = DataPath(self._link, plan, self.stats, self.rank)
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

    def _communicators(self) -> Callable[[str], Communicator | None]:
        """Collective: the communicator of each array's ranks (None: this rank is not one of them)."""
        arrays, subsets = self._plan.arrays, {}
        for name, spec in arrays.items():
            if spec.ranks is None or spec.ranks in subsets:
                continue
            if spec.ranks[-1] >= self.size:
                raise BridgeError(
                    f"array {name!r}: the contract gives it to ranks {list(spec.ranks)}, but the simulation has "
                    f"{self.size} ranks (0-{self.size - 1}); fix the contract's ranks"
                )
            subsets[spec.ranks] = sub_comm(self._comm, spec.ranks)
        return lambda name: self._comm if arrays[name].ranks is None else subsets[arrays[name].ranks]

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
        self._path.in_flight.done(done.items)

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
        if run.comm is self._comm:  # the ranks begin a step (collectively) with an array every rank publishes
            self._begin_step(step, time)
        wanted = run.schedule.wanted(step, time) or any(v.schedule.wanted(step, time) for v in run.views)
        return wanted and self._link.detached is None and run.comm is not None  # None: not among its ranks

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
            blocks = (self._devices.block(block),)  # a device array is described once, for the views too
            return self._publish_all(name, blocks, step, time, None if offset is None else (offset,))
        finally:
            self.stats.publish_s += perf_counter() - started

    def publish_blocks(
        self,
        name: str,
        blocks: Sequence[Block],
        *,
        step: int,
        offsets: Sequence[tuple[int, ...]],
        time: float | None = None,
    ) -> bool:
        """Hand several blocks of array ``name`` at ``step`` to the analytics (patches, tiles, strips).

        As :meth:`publish`, with ``blocks`` and their global ``offsets`` (one each, fixed during
        the run, as is their number; a rank may give none). The blocks of all ranks must tile the
        array, in any arrangement: where their edges do not line up across the array, a block
        is copied as several chunks of the analytics' grid (docs/runtime.md, "Block layouts").

        Returns
        -------
        bool
            True if data was copied for the analytics (see :meth:`publish`).
        """
        self.stats.calls += 1
        blocks, offsets = tuple(blocks), tuple(offsets)
        if len(blocks) != len(offsets):
            raise BlockMismatchError(
                f"rank {self.rank}: array {name!r}: {len(blocks)} blocks and {len(offsets)} offsets; give one "
                "offset per block"
            )
        started = perf_counter()
        try:
            return self._publish_all(name, tuple(map(self._devices.block, blocks)), step, time, offsets)
        finally:
            self.stats.publish_s += perf_counter() - started

    def _publish_all(
        self, name: str, blocks: tuple[Any, ...], step: int, time: float | None, offsets: tuple[Any, ...] | None
    ) -> bool:
        """Publish ``blocks`` of ``name``, then of each of its views (copied from the same blocks)."""
        copied = self._publish(name, blocks, step, time, offsets)
        run = self._published.get(name)
        for view in run.views if run is not None else ():
            copied = self._publish(view.array.name, blocks, step, time, offsets, view=True) or copied
        return copied

    def _publish(  # the arguments of publish, and whether this is a view of the array published
        self,
        name: str,
        blocks: tuple[Any, ...],
        step: int,
        time: float | None,
        offsets: tuple[Any, ...] | None,
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
        if not (known or self._steered_wanted(run, blocks, step, time, offsets)):
            return self._unwanted(run, step, time)
        if run.stride:  # a fixed step cadence: the next wanted step is known, the steps before it take the fast path
            following = step + run.stride
            run.skip_below = following if following <= run.last_wanted else NEVER
        tiling = run.tiling
        assert tiling is not None, "the layout is agreed at the first publish"
        if not (
            offsets is None
            and len(tiling.boxes) == 1
            and type(block := blocks[0]) is np.ndarray
            and block.shape == tiling.boxes[0][1]
            and block.dtype == run.array.dtype
        ):
            check_same_blocks(self.rank, run, blocks, offsets, step)  # raises with what is wrong, if anything is
        if self._closed or self._link.detached is not None:
            return self._refuse(run)
        if not self._path.make_room(run, step):
            return False
        if not known:
            self._steer.handed_over(name, step)
        if not tiling.pieces:
            self.stats.not_selected += 1
            return False
        return self._path.copy(run, blocks, step, time, self._steer.tags)

    def _steered_wanted(
        self, run: ArrayRun, blocks: tuple[Any, ...], step: int, time: float | None, offsets: tuple[Any, ...] | None
    ) -> bool:
        """The full path: the layout at the first publish, the steering hooks, then the cadence. Wanted?"""
        if run.tiling is None:
            if run.comm is None:
                ranks = list(run.array.spec.ranks or ())
                raise BlockMismatchError(
                    f"rank {self.rank}: array {run.array.name!r} is published by ranks {ranks} only (the contract's "
                    "ranks); this rank must not publish it"
                )
            self._link.send(Publishing(self.rank, run.array.name))  # the runtime can name a rank that never comes
            run.tiling = agree_on_layout(run.comm, run.array, blocks, offsets)
            if self.rank == 0 and any(len(parts) > 1 for parts in run.tiling.layout.parts):
                log.info(
                    "array %r: the blocks' edges do not line up across the array; its %d blocks are copied as %d "
                    "chunks",
                    run.array.name,
                    len(run.tiling.layout.parts),
                    run.tiling.layout.nchunks,
                )
        if run.comm is self._comm:  # the ranks begin a step (collectively) with an array every rank publishes
            self._begin_step(step, time)
            self._steer.monitor(run.array.name, blocks, run.tiling.boxes, step, time)
        return run.schedule.wanted(step, time)

    def _refuse(self, run: ArrayRun) -> bool:
        if self._closed:
            raise BridgeError("publish() after close()")
        if self._plan.backpressure.policy == "skip" and run.comm is not None:
            run.comm.allgather(False)  # the others are in this collective: make them skip too
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

    def _begin_step(self, step: int, time: float | None = None) -> None:
        if self._steer.active and self.rank == 0 and step > self._steer.step:
            self._link.poll()  # rank 0 broadcasts the decisions it has received
        try:
            self._steer.begin_step(step, time)
        except BridgeError as exc:
            self._link.detach(str(exc))

    def _report(self, event: RankMessage) -> None:
        self._link.send(event)

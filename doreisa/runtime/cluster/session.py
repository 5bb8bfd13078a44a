"""A run's analytics side on a Ray cluster: the head, one node actor per node, and the driver loop.

:class:`Session` needs a connected Ray (``ray.init`` done, see
:func:`~doreisa.runtime.cluster.setup.start_ray`). It is what ``doreisa run`` uses, and what
tests use with a session-wide Ray instance.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from doreisa.analytics import Registry, bind_analytics, default_registry
from doreisa.contract import Contract
from doreisa.errors import ClusterError, ProtocolError
from doreisa.runtime import _names
from doreisa.runtime.cluster.calls import ActorWatch, GcsWatch, ask, kill
from doreisa.runtime.cluster.driver import AnalyticsDriver
from doreisa.runtime.cluster.head import HeadState
from doreisa.runtime.cluster.node_actor import NodeActor
from doreisa.runtime.cluster.preflight import check_devices
from doreisa.runtime.cluster.rebuild import HeadReader, sender_name
from doreisa.runtime.cluster.results import Provenance, ResultWriter
from doreisa.runtime.cluster.setup import limit_malloc_arenas
from doreisa.runtime.cluster.transit import AnalyticsNodes
from doreisa.runtime.cluster.watch import RunState, RunWatch
from doreisa.runtime.protocol import (
    Applied,
    Done,
    Event,
    MonitorBatch,
    NodeCounts,
    NodeWarning,
    PlacementChanged,
    Publishing,
    RankClosed,
    RankError,
    RankJoined,
    RankLost,
    StepDropped,
    StepLost,
    Taken,
    TransitCounts,
    TriggerFailed,
    describe,
)
from doreisa.runtime.scheduling.scheduler import Cuts, partitioned_get

log = logging.getLogger("doreisa.session")

#: Seconds to wait for the head and node actors to start (Ray starts a worker process for each).
ACTOR_START_TIMEOUT = 120
#: Times Ray restarts the head actor if it dies; each time its state is rebuilt from the node actors.
HEAD_RESTARTS = 3
#: Why a step whose blocks were relayed to an analytics node that was lost since is itself lost.
LOST = "its blocks were on an analytics node that was lost"


def _ray_dask_get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """Ray's stock Dask scheduler, for a computation outside an analytic's call. Imported on first use:
    ``ray.util.dask`` imports ``dask.dataframe``, half a second of every run's start (docs/performance.md)."""
    from ray.util.dask import ray_dask_get

    return ray_dask_get(dsk, keys, **kwargs)


def _on(node: dict[str, Any]) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)


class Session:
    """The analytics side of one run.

    Parameters
    ----------
    contract : Contract
        The run's contract; the node actors receive it, and hand it to the ranks.
    registry : Registry
        Where the contract's analytics are looked up (bound before anything starts).
    output : path, optional
        Results folder (``results.csv``); ``None`` keeps results in memory only.
    run_dir : path, optional
        Rendezvous folder for the ranks (node-local path, same on every node). Default: new.
    keep_results : bool, optional
        Keep every result in memory (``session.results.values``); default: only without ``output``.
    """

    def __init__(
        self,
        contract: Contract,
        *,
        registry: Registry = default_registry,
        output: str | os.PathLike[str] | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        keep_results: bool | None = None,
    ) -> None:
        self.contract = contract
        self.bound = bind_analytics(contract, registry)  # fail before starting anything
        limit_malloc_arenas()  # this process runs the driver's threads
        self.run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="doreisa-", dir="/tmp"))
        self._own_run_dir = run_dir is None
        self.state = RunState()
        self.results = ResultWriter(
            Path(output) if output is not None else None, contract.outputs.formats, keep=keep_results
        )
        self.provenance = Provenance(Path(output) if output is not None else None)
        self._head: Any = None
        self._reader: HeadReader | None = None
        self._nodes: list[Any] = []
        self._node_names: list[str] = []
        self.analytics = AnalyticsNodes(contract)
        #: while the run serves: the head node's GCS (F12) and the node actors (F5)
        self._watches: list[GcsWatch | ActorWatch] = []
        self.cuts = Cuts()  # graphs cut at one step, reused at the next ones
        self.driver = AnalyticsDriver(
            contract,
            self.bound,
            results=self.results,
            scheduler=_ray_dask_get,
            scheduler_for=self.scheduler_for,
            on_done=self._notify_done,
            on_action=self.provenance.action,
        )
        self.started_at = time.monotonic()
        self.cpu_started = time.process_time()  # this process's own CPU: the driver's share of the cost
        self.last_node_counts: list[NodeCounts] = []
        self.last_transit_counts: list[TransitCounts] = []

    @property
    def env(self) -> dict[str, str]:
        """Environment variables a rank needs to find this session."""
        return {_names.ENV_RUN_DIR: str(self.run_dir), _names.ENV_CONNECT_TIMEOUT: str(self.contract.timeouts.connect)}

    @property
    def _keep_latest(self) -> int | None:
        policy = self.contract.backpressure
        return policy.max_in_flight if policy.policy == "latest" else None

    def start(self) -> None:
        """Start the head and a node actor on every alive Ray node; return once ranks can connect."""
        check_devices(self.contract, ray.cluster_resources())  # a GPU placement on a cluster without GPU: refused here
        self._watches = [GcsWatch(ray.get_runtime_context().gcs_address)]
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        head_cls = ray.remote(HeadState)
        # on this driver's node, which asks it all the time: losing that node ends the run anyway, and
        # losing another one then costs only what that node held (the F5 test). Hard: num_cpus=0 always fits.
        driver_node = ray.get_runtime_context().get_node_id()
        log.info("driver and head actor on node %s", driver_node[:8])
        here = NodeAffinitySchedulingStrategy(node_id=driver_node, soft=False)
        # Restarted by Ray if it dies, empty: the session then rebuilds its state from the node actors
        # (runtime/cluster/rebuild.py; F3). Killed for good (ray.kill), or past its restarts, it ends the run (F4).
        self._head = head_cls.options(
            name=f"{_names.HEAD_ACTOR}-{uuid.uuid4().hex[:8]}",
            num_cpus=0,
            max_concurrency=8,
            max_restarts=HEAD_RESTARTS,
            scheduling_strategy=here,
        ).remote(step_timeout=self.contract.timeouts.step, keep_latest=self._keep_latest)
        alive = [node for node in ray.nodes() if node["Alive"]]
        analytics = self.analytics.start(alive)
        transit_arrays = [a for a in self.analytics.away if self.contract.placement_of(a).mode == "in_transit"]
        node_cls = ray.remote(NodeActor)
        for node in alive:
            self._nodes.append(
                node_cls.options(num_cpus=0, scheduling_strategy=_on(node), max_concurrency=4).remote(
                    run_dir=str(self.run_dir),
                    contract=self.contract,
                    head=self._head,
                    ingest=node not in analytics or len(analytics) == len(alive),
                    transit=self.analytics.actors,
                    relayed=transit_arrays,
                )
            )
        self._node_names = [f"node actor on node {node['NodeID'][:8]}" for node in alive]
        ask([n.node_id.remote() for n in self._nodes], what="node actors", timeout=ACTOR_START_TIMEOUT)
        nodes = [node["NodeID"] for node in alive]
        self._watches.append(
            ActorWatch([*zip(self._nodes, self._node_names, nodes, strict=True), *self.analytics.named])
        )
        senders = {sender_name(node): actor for node, actor in zip(nodes, self._nodes, strict=True)}
        self._reader = HeadReader(self._head, senders, on_rebuilt=self.state.warnings.append)

    def scheduler_for(
        self,
        arrays: tuple[str, ...],
        leaf_nodes: Mapping[Any, str],
        leaf_bytes: Mapping[Any, int],
        bindings: Mapping[Any, Any],
    ) -> Any:
        """Dask-on-Ray for analytics of ``arrays``: tasks next to their blocks, on analytics nodes if in transit,
        on a GPU (CuPy chunks) if one of the arrays is placed there."""
        resources = self.analytics.resources(arrays)
        remote_args: dict[str, Any] = {"resources": dict.fromkeys(resources, 0.001)} if resources else {}
        device = "gpu" if any(self.contract.placement_of(a).device == "gpu" for a in arrays) else "cpu"
        if device == "gpu":
            remote_args["num_gpus"] = 1
        return functools.partial(
            partitioned_get,
            leaf_nodes=leaf_nodes,
            leaf_bytes=leaf_bytes,
            bindings=bindings,
            cuts=self.cuts,
            ray_remote_args=remote_args,
            device=device,
        )

    def _notify_done(self, done: Done) -> None:
        if self._reader is not None:
            self._reader.settled(done.items)
        for node in self._nodes:
            node.progress.remote(done)

    def poll(self, timeout: float = 0.2) -> None:
        """Take what the head has (complete steps, events) and run the analytics on it."""
        assert self._reader is not None, "Session.start() first"
        taken: Taken = self._reader.take(timeout)
        self.state.partial = taken.partial
        for event in taken.events:
            self._event(event)
        for step in taken.steps:
            if self.analytics.lost and (gone := self.analytics.holds_lost(step)):
                self._step_lost(
                    StepLost(step.array, step.step, len(step.blocks) - len(gone), len(step.blocks), (), LOST)
                )
                self.state.blocks += len(gone)
                continue
            self.state.blocks += len(step.blocks)
            self.state.last_step = max(self.state.last_step, step.step)
            self.driver.deliver(step)

    def _event(self, event: Event) -> None:
        match event:
            case (
                RankJoined() | RankClosed() | Publishing() | RankLost() | RankError() | TriggerFailed() | NodeWarning()
            ):
                self.state.record(event)
            case Applied():
                self.provenance.write(event)
            case MonitorBatch(records=records):  # rank 0 sends them in batches (runtime/rank/steering.py)
                for record in records:
                    for key, value in record.values.items():
                        self.results.record(f"monitor:{key}", record.step, record.time, value)
                    self.state.count_nonfinite(record.step, record.values)
            case StepLost():
                self._step_lost(event)
            case PlacementChanged():  # placement: auto
                log.info("array %r from step %d %s on node %s", event.array, event.step, event.where, event.node[:8])
                self.provenance.placement(event)
            case StepDropped(array=array, step=step, blocks=blocks):  # policy latest: newer steps came first
                self.state.dropped_latest.append((array, step))
                self.state.blocks += blocks
                self.provenance.dropped(array, step)
                self._notify_done(Done(((array, step),)))
            case _:
                raise ProtocolError(f"the head reported {describe(event)}, which the session does not take")

    def _step_lost(self, event: StepLost) -> None:
        self.state.lost_steps.append(event)
        self.state.blocks += event.have
        self._notify_done(Done(((event.array, event.step),)))  # deterministic ranks must not wait for it
        why = event.reason or f"{event.have} of {event.expected} blocks arrived (ranks {list(event.ranks_seen)})"
        log.error("step %s of %s lost: %s", event.step, event.array, why)

    def serve(
        self,
        nranks: int,
        *,
        alive: Callable[[], bool] = lambda: True,
        tick: Callable[[Session], None] = lambda s: None,
    ) -> None:
        """Run the analytics until ``nranks`` ranks have closed (or died) and their steps are analysed.

        Parameters
        ----------
        nranks : int
            Number of ranks expected.
        alive : callable
            False once the simulation's processes have exited (then remaining data is drained).
        tick : callable
            Called about once per loop (progress display).

        Raises
        ------
        RuntimeUnavailableError
            If fewer than ``nranks`` ranks connected within ``timeouts.connect``.
        StallError
            If ranks never enter a publish the others wait for them in (``timeouts.step``).
        ClusterError
            If an actor of the run or the head node's GCS is gone.
        """
        subsets = {name: spec.ranks for name, spec in self.contract.arrays.items() if spec.ranks is not None}
        watch = RunWatch(self.contract.timeouts, nranks, self.run_dir, subsets)
        while True:
            self.poll()
            self._check_watches()
            tick(self)
            if watch.finished(self.state, self._drained()):
                return
            watch.check(self.state, alive())

    def _check_watches(self) -> None:
        """The GCS and the node actors still there? A dead node actor ends the run, named with the ranks it
        served; one that served none (a Ray node without ranks, removed) is only a warning."""
        for watch in self._watches:
            try:
                watch.check()
            except ClusterError as exc:
                if not isinstance(watch, ActorWatch):
                    raise
                if self.analytics.has(exc.actor):
                    self._analytics_node_lost(exc, watch)
                    continue
                ranks = sorted(r for r, node in self.state.hello.items() if f"node {node[:8]}" in exc.actor)
                if ranks:
                    raise ClusterError(
                        f"{exc}; ranks {ranks} sent their blocks to it: those not yet analysed are lost, and the "
                        "ranks go on without analytics, so no step can be complete any more",
                        actor=exc.actor,
                    ) from exc
                log.warning("%s; it served no rank: the run goes on", exc)
                self.state.warnings.append(f"{exc}; it served no rank, and the run went on")
                watch.forget(exc.actor)
                kept = [(n, name) for n, name in zip(self._nodes, self._node_names, strict=True) if name != exc.actor]
                self._nodes, self._node_names = [n for n, _ in kept], [name for _, name in kept]
                if self._reader is not None:
                    self._reader.keep(self._nodes)

    def _analytics_node_lost(self, exc: ClusterError, watch: ActorWatch) -> None:
        """In transit: the node actors relay to the other analytics nodes; what was relayed there is lost."""
        node = self.analytics.drop(exc.actor)
        watch.forget(exc.actor)
        if not self.analytics.actors:
            raise ClusterError(f"{exc}; it was the last analytics node, the run cannot go on", actor=exc.actor) from exc
        for actor in self._nodes:
            actor.drop_transit.remote(node)
        said = f"{exc}; the steps with blocks there are lost (steps_lost), later steps go to the other analytics nodes"
        log.warning("%s", said)
        self.state.warnings.append(said)

    def _drained(self) -> bool:
        """Every block the closed ranks published has reached the driver (or was reported lost)."""
        published = sum(s.published for s in self.state.closed.values())
        return self.state.partial == 0 and self.state.blocks >= published

    def node_counts(self) -> list[NodeCounts]:
        """Per node actor: blocks and bytes ingested, ranks, time spent in ray.put.

        Raises
        ------
        ClusterError
            Naming the node actor that died or did not answer.
        """
        return [ask(n.counts.remote(), what=name) for n, name in zip(self._nodes, self._node_names, strict=True)]

    def stop(self) -> list[str]:
        """Report incomplete steps as lost, stop the actors, release the data and remove the run folder.

        Never raises: an actor that died cannot be asked, but everything else is done all the
        same. Returns what could not be done, one line each (empty when all went well).
        """
        problems: list[str] = []
        try:
            if self._nodes:
                self._attempt(problems, self._collect_counts)
            if self._head is not None:
                self._attempt(problems, self._flush)
            for node, name in zip(self._nodes, self._node_names, strict=True):
                self._attempt(problems, lambda node=node, name=name: ask(node.stop.remote(), what=name, timeout=10))
                kill(node, what=name)
            for actor, _ in self.analytics.actors:
                kill(actor, what="transit actor")
            if self._head is not None:
                kill(self._head, what="head actor")
        finally:
            self._nodes, self._node_names, self.analytics.actors, self._head, self._reader = [], [], [], None, None
            self._watches = []  # their pending pings: a dead actor's answer is an object in Ray's store
            self._release()
        return problems

    @staticmethod
    def _attempt(problems: list[str], action: Callable[[], object]) -> None:
        try:
            action()
        except (ClusterError, ProtocolError) as exc:
            log.error("%s", exc)
            problems.append(str(exc))

    def _collect_counts(self) -> None:
        self.last_node_counts = self.node_counts()
        self.last_transit_counts = ask([t.counts.remote() for t, _ in self.analytics.actors], what="transit actors")

    def _flush(self) -> None:
        for event in ask(self._head.flush.remote(), what="head actor"):
            self._event(event)

    def _release(self) -> None:
        """What this process holds: the windows' blocks, the cut graphs, the output files, the run folder."""
        self.driver.release()
        self.cuts.clear()  # the cut graphs' tasks kept in the object store
        self.provenance.skipped(self.state.closed)
        self.results.close()
        self.provenance.close()
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

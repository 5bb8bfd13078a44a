"""Helpers for testing analytics and simulations with doreisa, used by doreisa's own tests.

Examples
--------
>>> from doreisa.testing import run_coupled  # doctest: +SKIP
>>> session = run_coupled(contract_text, ["python", "sim.py"], nranks=4)  # doctest: +SKIP
>>> session.results.values["mean"]  # {step: value}  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doreisa.analytics import Registry, default_registry
from doreisa.contract import parse_contract
from doreisa.runtime.rank.inprocess import InProcessTransport, Posted

__all__ = [
    "CoupledRun",
    "InProcessTransport",
    "Posted",
    "block_objects",
    "free_port",
    "local_cluster",
    "mpiexec",
    "object_locations",
    "put_on_node",
    "routable_address",
    "run_coupled",
    "store_stats",
]


@dataclass
class CoupledRun:
    """The outcome of :func:`run_coupled`."""

    session: Any
    returncode: int
    output: str

    @property
    def values(self) -> dict[str, dict[int, Any]]:
        """Results by analytic label, then step."""
        return dict(self.session.results.values)


def routable_address() -> str:
    """This machine's address on its default route (no packet is sent): where a Ray cluster of
    separate ``ray start`` processes must listen, since Ray rewrites the loopback address.

    Raises
    ------
    OSError
        Without a default route.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))
        return str(s.getsockname()[0])


def free_port() -> int:
    """A TCP port free at the time of the call."""
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def process_tree(root: int) -> dict[int, str]:
    """``root`` and every process below it, read from ``/proc`` (Linux): pid -> command line.

    What a fault test kills (the GCS of a ``doreisa run``) or inspects (its listening sockets).
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    tree: dict[int, str] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            tree[pid] = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()
        except OSError:
            continue
        todo += children.get(pid, [])
    return tree


def mpiexec() -> str:
    """The mpiexec beside this Python (the mpich wheel), else the one on PATH."""
    from doreisa.runtime.cluster.preflight import find_mpiexec

    return find_mpiexec(None)


def run_coupled(
    contract_text: str,
    command: list[str],
    *,
    nranks: int,
    registry: Registry = default_registry,
    output: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    use_mpi: bool = True,
    timeout: float = 120,
) -> CoupledRun:
    """Run ``command`` on ``nranks`` MPI ranks against a fresh :class:`~doreisa.runtime.cluster.session.Session`.

    Needs a connected Ray (``ray.init`` done). The session is stopped before returning; its
    results, counts and run state stay readable.
    """
    from doreisa.runtime.cluster.session import Session

    contract = parse_contract(contract_text)
    session = Session(contract, registry=registry, output=output, keep_results=True)
    session.start()
    argv = [mpiexec(), "-n", str(nranks), *command] if use_mpi else command
    full_env = {**os.environ, **session.env, **(env or {})}
    proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        session.serve(nranks, alive=lambda: proc.poll() is None)
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            out, _ = proc.communicate()
        session.stop()
    return CoupledRun(session, proc.returncode, out)


@contextlib.contextmanager
def local_cluster(
    nodes: int,
    *,
    head_cpus: int = 1,
    head_resources: Mapping[str, float] | None = None,
    node_resources: Mapping[int, Mapping[str, float]] | None = None,
    store_bytes: int = 200 * 1024 * 1024,
    namespace: str = "doreisa-testing",
    system_config: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """A Ray cluster of a head and ``nodes`` one-CPU nodes on this machine, connected as this driver.

    Every node listens on 127.0.0.1, keeps its files in a private temporary folder (removed at
    the end) and starts no dashboard; token authentication stays as Ray sets it. Try in
    transit placement on one machine with ``head_resources={"doreisa_analytics": 1}``.

    Parameters
    ----------
    nodes : int
        Nodes besides the head.
    head_cpus : int
        CPUs of the head (0: it runs no task).
    head_resources, node_resources : mapping, optional
        Custom resources of the head, and of the i-th node.
    store_bytes : int
        Object store of each node.
    namespace : str
        Ray namespace of this driver.
    system_config : mapping, optional
        Ray's ``_system_config`` for the head, e.g. fast health checks so that a removed node is
        declared dead in about a second (``shared/RELIABILITY.md``, fact 3) instead of 15.

    Yields
    ------
    ray.cluster_utils.Cluster
    """
    from doreisa.runtime.cluster import prepare_ray_env

    prepare_ray_env()  # before ray is imported: the loopback trap
    import ray
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="doreisa-cluster-", dir="/tmp")
    # Cluster.add_node writes Ray's default address file whatever temp_dir says; we never read it
    # (explicit addresses only), but its folder must exist.
    os.makedirs(os.path.join(tempfile.gettempdir(), "ray"), exist_ok=True)
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": head_cpus,
                "object_store_memory": store_bytes,
                "node_ip_address": "127.0.0.1",
                "include_dashboard": False,
                "temp_dir": temp_dir,
                "resources": dict(head_resources or {}),
                **({"_system_config": dict(system_config)} if system_config else {}),
            },
        )
        for i in range(nodes):
            resources = dict((node_resources or {}).get(i, {}))
            cluster.add_node(
                num_cpus=1, object_store_memory=store_bytes, node_ip_address="127.0.0.1", resources=resources
            )
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace=namespace, logging_level=logging.WARNING)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


class BlockOwner:
    """A Ray actor's class: puts blocks into the object store of its node and owns them, as a
    doreisa node actor does (the blocks live as long as the actor holds them)."""

    def __init__(self) -> None:
        self.refs: list[Any] = []

    def node_id(self) -> str:
        """The Ray node this actor runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def put(self, blocks: list[Any]) -> list[Any]:
        """Store ``blocks`` (replacing the ones held before); their references."""
        import ray

        self.refs = [ray.put(b) for b in blocks]
        return self.refs

    def drop(self) -> None:
        """Forget the blocks (freed once nobody else holds their references)."""
        self.refs = []


def put_on_node(node_id: str, blocks: list[Any]) -> tuple[Any, list[Any]]:
    """Blocks stored on Ray node ``node_id`` and owned by a :class:`BlockOwner` actor there.

    Returns the actor (``ray.kill`` it, or call ``drop``, to free the blocks; ``put`` stores
    new ones) and the blocks' references. Raises ``RuntimeError`` if the actor is not on that node.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
    owner = ray.remote(num_cpus=0)(BlockOwner).options(scheduling_strategy=strategy).remote()
    if (where := ray.get(owner.node_id.remote())) != node_id:
        raise RuntimeError(f"the block owner runs on node {where}, not on {node_id}")
    return owner, ray.get(owner.put.remote(blocks)) if blocks else []


def block_objects(x: Any) -> list[Any]:
    """The Ray objects that hold the blocks of ``x``, a Dask array as doreisa hands it to an analytic.

    Called inside the analytic: ``x``'s blocks are placeholders bound to the step's blocks there.

    A block is an object of its own, or a ``(function, object, position)`` task that takes it
    out of an object (``getitem`` in :func:`doreisa.runtime.cluster.driver.to_dask` arrays, ``take`` of
    placeholders in an analytic's arrays); each object is listed once.
    """
    import ray

    from doreisa.runtime.scheduling.graphs import current

    found: dict[Any, None] = {}
    for value in dict(x.dask).values():
        if isinstance(value, tuple) and len(value) == 3:  # pyright: ignore[reportUnknownArgumentType]
            value = value[1]  # pyright: ignore[reportUnknownVariableType]
        value = current(value)  # a placeholder: the block bound to it in this analytic call
        if isinstance(value, ray.ObjectRef):
            found[value] = None
    return list(found)


def object_locations(refs: list[Any]) -> dict[Any, dict[str, Any]]:
    """Where objects live: ``{ref: {"node_ids": [...], "object_size": n}}``.

    Safe with references of several owners (blocks of several node actors), unlike one call
    of ``ray.experimental.get_object_locations`` in Ray 2.60, which can abort the process.
    """
    from doreisa.runtime.scheduling.scheduler import object_locations as locations

    return locations(refs)


def store_stats() -> dict[str, float]:
    """Object store use over the whole cluster: ``used_mib``, ``objects``, ``spilled_mib``.

    Reads Ray's memory summary (``ray memory --stats-only``); needs a connected Ray.
    """
    import re

    from ray._private.internal_api import memory_summary

    text = memory_summary(stats_only=True)
    used = re.search(r"Plasma memory usage (\d+) MiB, (\d+) objects", text)
    spilled = re.search(r"Spilled (\d+) MiB", text)
    return {
        "used_mib": float(used.group(1)) if used else 0.0,
        "objects": float(used.group(2)) if used else 0.0,
        "spilled_mib": float(spilled.group(1)) if spilled else 0.0,
    }


def store_back_to(before: Mapping[str, float], timeout: float = 30.0) -> dict[str, float]:
    """Wait until the object store holds no more than ``before`` (a :func:`store_stats` reading); the last reading.

    Ray refreshes its statistics asynchronously, and frees an object only once its owner and
    every borrower let go: after a run, its blocks must all be gone, whatever died during it.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        after = store_stats()
        if after["objects"] <= before["objects"] and after["used_mib"] <= before["used_mib"]:
            return after
        if time.monotonic() > deadline:
            return after
        time.sleep(0.5)

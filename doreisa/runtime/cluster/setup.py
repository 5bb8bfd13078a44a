"""Connecting the analytics process to Ray: a private cluster on this machine, or an existing one."""

from __future__ import annotations

import ctypes
import logging
import os
from types import ModuleType

import ray

from doreisa.runtime import _names


def start_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    temp_dir: str | None = None,
    dashboard: bool = False,
) -> None:
    """Connect to the Ray cluster at ``address``, or start a private one bound to 127.0.0.1.

    A local start runs with token authentication (Ray's default since 2.59, or the run's own
    token: :func:`~doreisa.runtime.cluster.private_ray_token`) and no dashboard unless asked
    (then only on 127.0.0.1). Its ``temp_dir``, which Ray makes world-writable, is made private
    again. Never uses ``address="auto"``.
    """
    if address:
        ray.init(address=address, namespace=_names.NAMESPACE, logging_level=logging.WARNING)
        return
    ray.init(
        address="local",
        namespace=_names.NAMESPACE,
        num_cpus=num_cpus,
        object_store_memory=object_store_memory,
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
        logging_level=logging.WARNING,
    )
    if temp_dir is not None:
        os.chmod(temp_dir, 0o700)  # Ray chmods the folders it creates to 0777


def ship_by_value(modules: list[ModuleType]) -> None:
    """Send what ``modules`` define (analytics files given to ``doreisa run --analytics``) by value.

    Ray pickles a function by reference (its module and name) when it ships a task; a worker then
    imports the module. A file loaded by path is on no worker's path, so an analytic that hands one
    of its own functions to Dask (``map_blocks``, ``reduction``) failed with ``No module named ...``
    as soon as its tasks ran on a Ray worker (blocks over 1 MiB, or on other nodes).
    """
    from ray import cloudpickle

    for module in modules:
        cloudpickle.register_pickle_by_value(module)


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas in this process (the analytics driver).

    ``ray_dask_get`` submits tasks from a thread pool, and glibc gives each thread its own
    arena that never shrinks: the driver's memory grew with every analysed step (the memory
    benchmark, docs/performance.md).
    Same as ``MALLOC_ARENA_MAX``, set at run time. Returns False where it is unavailable.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # M_ARENA_MAX
    except (OSError, AttributeError):
        return False

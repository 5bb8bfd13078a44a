"""Session-wide fixtures: one Ray cluster for the whole test session."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

# Before any ray import (loopback trap, see shared/RELIABILITY.md).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

NODE_STORE = 200 * 1024 * 1024
#: The head node is also the analytics node of in_transit tests: it carries this resource.
ANALYTICS_RESOURCE = "doreisa_analytics"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A Ray cluster of three nodes on this machine (head + 2), each with a 200 MiB store.

    Every Ray test shares it: rank blocks are spread over the three node actors, so every
    end-to-end test also exercises multi-node assembly. The head node carries the
    ``doreisa_analytics`` resource: with an in_transit contract it is the analytics node and
    the two others are the simulation nodes.
    """
    import ray
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="dt-", dir="/tmp")
    # Cluster.add_node writes Ray's default address file whatever temp_dir says; we never read it
    # (explicit addresses only), but its folder must exist.
    os.makedirs(os.path.join(tempfile.gettempdir(), "ray"), exist_ok=True)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": NODE_STORE,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "temp_dir": temp_dir,
            "resources": {ANALYTICS_RESOURCE: 1},
        },
    )
    for _ in range(2):
        cluster.add_node(num_cpus=1, object_store_memory=NODE_STORE, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="doreisa-tests", logging_level="WARNING")
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)

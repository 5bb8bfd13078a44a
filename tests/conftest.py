"""Session-wide fixtures: one Ray cluster for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from doreisa.runtime.cluster import prepare_ray_env

prepare_ray_env()  # before any ray import (loopback trap, see shared/RELIABILITY.md)

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
    from doreisa.testing import local_cluster

    with local_cluster(
        2, head_resources={ANALYTICS_RESOURCE: 1}, store_bytes=NODE_STORE, namespace="doreisa-tests"
    ) as cluster:
        yield cluster

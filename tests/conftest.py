"""Session-wide fixtures: one Ray cluster for the whole test session."""

from __future__ import annotations

import glob
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from doreisa.runtime.cluster import prepare_ray_env

prepare_ray_env()  # before any ray import (loopback trap, see shared/RELIABILITY.md)

_BEFORE = pytest.StashKey[set[str]]()
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


#: What doreisa and its tests create outside pytest's own temporary folders: run folders, shared
#: memory rings, Ray's temporary folders. Nothing of it may outlive the test session.
LEFTOVERS = ("/dev/shm/doreisa-*", "/tmp/doreisa-*", "/tmp/dray-*", "/tmp/du-*", "/tmp/dr-*")


def _gpu_missing() -> str | None:
    """Why the tests marked ``gpu`` cannot run here (None: CuPy imports and sees a CUDA device)."""
    try:
        import cupy  # pyright: ignore[reportMissingImports]
    except ImportError as exc:
        return f"CuPy is not importable ({exc}): pip install 'doreisa[gpu]'"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver
        return f"no CUDA device: {exc}"
    return None if count > 0 else "no CUDA device"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``gpu`` where CuPy or a CUDA device is missing (looked up only if one is collected)."""
    marked = [item for item in items if item.get_closest_marker("gpu") is not None]
    reason = _gpu_missing() if marked else None
    if reason is not None:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=f"gpu test: {reason}"))


def _leftovers() -> set[str]:
    return {path for pattern in LEFTOVERS for path in glob.glob(pattern)}


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = _leftovers()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every test and fixture (the session's Ray cluster too): fail the run if anything was left behind."""
    left = sorted(_leftovers() - session.config.stash.get(_BEFORE, set()))
    if left:
        print(f"\nleft behind by the test session ({len(left)}): " + ", ".join(left[:20]), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""A real rank Bridge against a real in-process NodeServer: no Ray, no MPI."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from doreisa.contract import parse_contract
from doreisa.runtime import _names
from doreisa.runtime.cluster.node import NodeServer
from doreisa.runtime.protocol import BlockRecord, describe
from doreisa.runtime.rank.bridge import Bridge
from doreisa.runtime.rank.comm import SingleProcessComm

NODE_ID = "n" * 56


def _copy_blocks(views: Any) -> Any:
    """What ``ray.put`` keeps of a block, or of a list of blocks stored together: a copy."""
    return [v.copy() for v in views] if isinstance(views, list) else views.copy()


@pytest.fixture
def copy_blocks() -> Callable[[Any], Any]:
    """The node's default ``put`` in these tests, for a test's own ``put`` to end with."""
    return _copy_blocks


@dataclass
class Rig:
    """One node server and the reports it sent to the (absent) head."""

    run_dir: str
    server: NodeServer
    reports: list[Any]

    node_id = NODE_ID

    @staticmethod
    def wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Poll ``predicate`` until it holds; fail the test after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout} s for {what}")
            time.sleep(0.002)

    def blocks(self) -> list[BlockRecord]:
        return [r for r in self.reports if isinstance(r, BlockRecord)]

    def kinds(self) -> list[str]:
        """The type of each report, in order (``BlockRecord``, ``RankJoined``, ...)."""
        return [describe(r) for r in self.reports]

    def publish(self, bridge: Bridge, name: str, block: Any, **kwargs: Any) -> bool:
        """``bridge.publish``, then wait until the node has ingested what was copied.

        Settling keeps at most one 'free' message unread by the bridge (see the recv_one bug in
        test_wire.py), so close() does not wait for ``timeouts.step``.
        """
        copied = bridge.publish(name, block, **kwargs)
        self.wait(lambda: len(self.blocks()) >= bridge.stats.published, "the node to ingest the block")
        return copied

    def finish(self, bridge: Bridge) -> dict[str, Any]:
        """Close the bridge and wait until the node has ingested everything before its 'close'."""
        stats = bridge.close()
        self.wait(lambda: "RankClosed" in self.kinds(), "the node to see the rank's close")
        return stats

    def stop_node(self) -> None:
        _stop_quickly(self.server)

    def ref(self, step: int) -> np.ndarray[Any, Any]:
        (block,) = [b for b in self.blocks() if b.step == step]
        return block.ref


@pytest.fixture(autouse=True)
def _no_runtime_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's shell may have these set by `doreisa run`; each test sets what it needs."""
    for name in (_names.ENV_RUN_DIR, _names.ENV_NODE, _names.ENV_CONNECT_TIMEOUT):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def run_dir() -> Iterator[str]:
    """A short run folder: Unix socket paths are limited to ~107 bytes."""
    path = tempfile.mkdtemp(prefix="du-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def node(run_dir: str) -> Iterator[Callable[..., Rig]]:
    """Start a NodeServer serving ``contract_text`` in ``run_dir``; stopped after the test."""
    servers: list[NodeServer] = []

    def start(
        contract_text: str,
        *,
        host: str | None = None,
        put: Callable[[Any], Any] | None = None,
        relay: Callable[[Any], tuple[Any, str]] | None = None,
        poll: bool = True,
    ) -> Rig:
        """``relay``: the node relays every array with it (in transit) instead of ``put``.

        ``poll=False``: the node never polls the rings, as where stores are not seen in order.
        """
        reports: list[Any] = []
        contract = parse_contract(contract_text)
        server = NodeServer(
            run_dir=run_dir,
            node_id=NODE_ID,
            host=host or socket.gethostname(),
            contract=contract,
            put=put or _copy_blocks,
            report=reports.extend,
            relay=relay,
            relayed=frozenset(contract.arrays) if relay else frozenset(),
            poll=poll,
        )
        server.start()
        servers.append(server)
        return Rig(run_dir, server, reports)

    yield start
    for server in servers:
        _stop_quickly(server)


def _stop_quickly(server: NodeServer) -> None:
    """``server.stop()``, poking its socket so the serving thread leaves ``select`` at once, not after 0.1 s."""
    stopper = threading.Thread(target=server.stop, name="stop-node")
    stopper.start()
    while stopper.is_alive():
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as poke:
            poke.connect(server.socket_path)
        stopper.join(0.005)


@pytest.fixture
def rig_bridge(node: Callable[..., Rig]) -> Iterator[Callable[[str], tuple[Rig, Bridge]]]:
    """A node for ``contract_text`` and one single-process Bridge connected to it; closed after the test."""
    bridges: list[Bridge] = []

    def make(contract_text: str) -> tuple[Rig, Bridge]:
        rig = node(contract_text)
        bridge = Bridge(SingleProcessComm(), run_dir=rig.run_dir, connect_timeout=5)
        bridges.append(bridge)
        return rig, bridge

    yield make
    for bridge in bridges:
        bridge.close()

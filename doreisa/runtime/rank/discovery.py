"""How a rank finds and greets the node actor of its node (files in the run directory)."""

from __future__ import annotations

import os
import socket
import time as _time
from pathlib import Path

import msgspec

from doreisa.errors import ProtocolError, RuntimeUnavailableError
from doreisa.runtime import _names
from doreisa.runtime.protocol import Hello, NodeInfo, Welcome
from doreisa.runtime.wire import Malformed, MessageReader, encode, recv_one


def connect_to_node(
    run_dir: Path, host: str, local_index: int, rank: int, size: int, timeout: float
) -> tuple[socket.socket, Welcome]:
    """Connect to the node actor of ``host`` (the ``local_index``-th rank there picks its actor) and say hello.

    Node actors register themselves as JSON files under ``run_dir/nodes``; either side may
    start first, so this retries until ``timeout``.
    """
    deadline = _time.monotonic() + timeout
    wanted = os.environ.get(_names.ENV_NODE)
    nodes_dir = run_dir / _names.NODES_SUBDIR
    delay = 0.02
    while True:
        nodes = nodes_on(nodes_dir, host, wanted)
        if nodes:
            node = nodes[local_index % len(nodes)]
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(node.socket)
                sock.sendall(encode(Hello(rank, size, os.getpid(), host)))
                welcome = recv_one(sock, MessageReader(Welcome), max(1.0, deadline - _time.monotonic()))
                if isinstance(welcome, Malformed):
                    raise ProtocolError(f"rank {rank}: the node actor's welcome: {welcome.error}")
                sock.setblocking(True)
                return sock, welcome
            except ProtocolError:
                sock.close()
                raise
            except (OSError, EOFError) as exc:
                sock.close()
                last = str(exc)
        else:
            last = f"no node actor registered for host {host!r} in {nodes_dir}"
        if _time.monotonic() > deadline:
            raise RuntimeUnavailableError(
                f"rank {rank}: no doreisa runtime after {timeout:g} s ({last}). Is `doreisa run` running with "
                f"--run-dir {run_dir}, and does Ray run on this node?"
            )
        _time.sleep(delay)
        delay = min(delay * 2, 0.5)


def nodes_on(nodes_dir: Path, host: str, wanted: str | None) -> list[NodeInfo]:
    """The registered node actors of ``host`` that ingest blocks (or the one named ``wanted``)."""
    found = []
    for path in sorted(nodes_dir.glob("*.json")) if nodes_dir.is_dir() else []:
        try:
            info = msgspec.json.decode(path.read_bytes(), type=NodeInfo)
        except (OSError, msgspec.DecodeError):  # gone, or another version's: not a node for this rank
            continue
        if (wanted and info.node_id == wanted) or (not wanted and info.host == host and info.ingest):
            found.append(info)
    return found

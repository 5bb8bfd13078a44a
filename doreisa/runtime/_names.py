"""Names shared by the runtime's processes: the single copy of each."""

from __future__ import annotations

#: Ray namespace of every doreisa actor.
NAMESPACE = "doreisa"
HEAD_ACTOR = "doreisa-head"

#: Environment variables `doreisa run` gives the ranks.
ENV_RUN_DIR = "DOREISA_RUN_DIR"
#: Optional: the Ray node id of the node actor a rank must use (tests, odd topologies).
ENV_NODE = "DOREISA_NODE"
#: Optional: seconds a rank waits for the runtime (overrides the contract's timeouts.connect).
ENV_CONNECT_TIMEOUT = "DOREISA_CONNECT_TIMEOUT"

#: Inside the run folder: one socket and one description per node actor.
NODES_SUBDIR = "nodes"
#: Where rank-side shared memory rings live (node-local, RAM backed when possible).
SHM_DIR = "/dev/shm"
SHM_PREFIX = "doreisa-"

"""The Ray side: node actors, the head, the analytics driver, the session and ``doreisa run``.

Importing this package imports no Ray: :func:`prepare_ray_env` must run before Ray does.
"""

from __future__ import annotations

import os


def prepare_ray_env() -> None:
    """Set what Ray reads at import, unless the user set it: call it before ``import ray``.

    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps ``127.0.0.1`` as the node address (else Ray
    rewrites it to a routable address that local processes may not reach: the loopback trap of
    shared/RELIABILITY.md); ``RAY_USAGE_STATS_ENABLED=0``: no usage report leaves the machine.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

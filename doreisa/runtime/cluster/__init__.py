"""The Ray side: node actors, the head, the analytics driver, the session and ``doreisa run``.

Importing this package imports no Ray: :func:`prepare_ray_env` must run before Ray does.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path


def prepare_ray_env() -> None:
    """Set what Ray reads at import, unless the user set it: call it before ``import ray``.

    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps ``127.0.0.1`` as the node address (else Ray
    rewrites it to a routable address that local processes may not reach: the loopback trap of
    shared/RELIABILITY.md); ``RAY_USAGE_STATS_ENABLED=0``: no usage report leaves the machine.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def private_ray_token(folder: Path) -> Path | None:
    """Token authentication with a token of this run's, in ``folder`` with mode 0600: call it before ``import ray``.

    Ray's own token, ``~/.ray/auth_token``, is shared by every run of the user and written with
    mode 0644. This one lives in the run's private folder and goes with it. Nothing is done if
    ``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH`` is set: the user chose.
    Returns the token's path, if it made one.
    """
    if any(name in os.environ for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        return None
    if "ray._raylet" in sys.modules:  # too late: Ray read its authentication settings when it was imported
        return None
    path = folder / "auth_token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    return path

"""The runtime layer. Light on purpose: ``doreisa.runtime.rank.bridge`` (the simulation side) never
imports ray or dask, so this package loads the analytics side (``Session``) only on demand."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doreisa.runtime.cluster.session import Session
    from doreisa.runtime.cluster.setup import start_ray
    from doreisa.runtime.rank.bridge import Bridge

_LAZY = {
    "Bridge": "doreisa.runtime.rank.bridge",
    "Session": "doreisa.runtime.cluster.session",
    "start_ray": "doreisa.runtime.cluster.setup",
}
__all__ = ["Bridge", "Session", "start_ray"]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'doreisa.runtime' has no attribute {name!r}")

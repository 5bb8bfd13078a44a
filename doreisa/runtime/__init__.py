"""The runtime layer. Light on purpose: ``doreisa.runtime.bridge`` (the simulation side) never
imports ray or dask, so this package loads the analytics side (``Session``) only on demand."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doreisa.runtime.bridge import Bridge
    from doreisa.runtime.session import Session, start_ray

_LAZY = {
    "Bridge": "doreisa.runtime.bridge",
    "Session": "doreisa.runtime.session",
    "start_ray": "doreisa.runtime.session",
}
__all__ = ["Bridge", "Session", "start_ray"]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'doreisa.runtime' has no attribute {name!r}")

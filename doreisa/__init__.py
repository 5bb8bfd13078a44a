"""doreisa: contract-driven in situ analytics for MPI simulations, on Ray and Dask.

``import doreisa`` is light: the errors and the plugin registries only. ``Contract`` and
``load_contract`` (pydantic, YAML), ``Bridge`` (simulation side, which needs neither: it runs the
plan compiled from the contract), ``analytic`` (analytics side) and ``open_run`` (a finished
run's results, with xarray) load their layers on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from doreisa.errors import (
    AnalyticsError,
    BlockMismatchError,
    BridgeError,
    ClusterError,
    ContractError,
    DeviceUnavailableError,
    DoreisaError,
    ExpressionError,
    LayoutError,
    OutputError,
    ProtocolError,
    RuntimeUnavailableError,
    StallError,
)
from doreisa.plugins import register_preprocessor, register_sink

if TYPE_CHECKING:
    from doreisa.analytics import Registry, analytic
    from doreisa.contract import Contract, load_contract
    from doreisa.report import open_run
    from doreisa.runtime.rank.bridge import Bridge

__version__ = "0.4.0.dev0"

_LAZY = {
    "Contract": "doreisa.contract",
    "load_contract": "doreisa.contract",
    "analytic": "doreisa.analytics",
    "Registry": "doreisa.analytics",
    "Bridge": "doreisa.runtime.rank.bridge",
    "open_run": "doreisa.report",
}

__all__ = [
    "AnalyticsError",
    "BlockMismatchError",
    "Bridge",
    "BridgeError",
    "ClusterError",
    "Contract",
    "ContractError",
    "DeviceUnavailableError",
    "DoreisaError",
    "ExpressionError",
    "LayoutError",
    "OutputError",
    "ProtocolError",
    "Registry",
    "RuntimeUnavailableError",
    "StallError",
    "__version__",
    "analytic",
    "load_contract",
    "open_run",
    "register_preprocessor",
    "register_sink",
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "contract":  # loaded by `import doreisa` before it was lazy: `doreisa.contract.X` still works
        return importlib.import_module("doreisa.contract")
    raise AttributeError(f"module 'doreisa' has no attribute {name!r}")

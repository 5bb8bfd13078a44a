"""The contract layer: pure data. Never imports ray, dask or mpi4py.

Its names load on first use (PEP 562): a simulation rank imports only the expression language
(:mod:`doreisa.contract.expressions`, no pydantic, no YAML) to evaluate its triggers, from the
compiled plan it runs (:mod:`doreisa.runtime.plan`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doreisa.contract.document import Contract
    from doreisa.contract.events import FeedbackPolicy, Monitor, Trigger, TriggerAction
    from doreisa.contract.expressions import Expression, parse_expression
    from doreisa.contract.loader import load_contract, parse_contract
    from doreisa.contract.models import (
        AnalyticSpec,
        ArraySpec,
        Backpressure,
        Cadence,
        Handover,
        Outputs,
        Placement,
        Preprocess,
        Slice,
        Timeouts,
    )

_LAZY = {
    "AnalyticSpec": "doreisa.contract.models",
    "ArraySpec": "doreisa.contract.models",
    "Backpressure": "doreisa.contract.models",
    "Cadence": "doreisa.contract.models",
    "Contract": "doreisa.contract.document",
    "Expression": "doreisa.contract.expressions",
    "FeedbackPolicy": "doreisa.contract.events",
    "Handover": "doreisa.contract.models",
    "Monitor": "doreisa.contract.events",
    "Outputs": "doreisa.contract.models",
    "Placement": "doreisa.contract.models",
    "Preprocess": "doreisa.contract.models",
    "Slice": "doreisa.contract.models",
    "Timeouts": "doreisa.contract.models",
    "Trigger": "doreisa.contract.events",
    "TriggerAction": "doreisa.contract.events",
    "load_contract": "doreisa.contract.loader",
    "parse_contract": "doreisa.contract.loader",
    "parse_expression": "doreisa.contract.expressions",
}

__all__ = [
    "AnalyticSpec",
    "ArraySpec",
    "Backpressure",
    "Cadence",
    "Contract",
    "Expression",
    "FeedbackPolicy",
    "Handover",
    "Monitor",
    "Outputs",
    "Placement",
    "Preprocess",
    "Slice",
    "Timeouts",
    "Trigger",
    "TriggerAction",
    "load_contract",
    "parse_contract",
    "parse_expression",
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'doreisa.contract' has no attribute {name!r}")

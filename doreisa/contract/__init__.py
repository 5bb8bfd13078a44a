"""The contract layer: pure data. Never imports ray, dask or mpi4py."""

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

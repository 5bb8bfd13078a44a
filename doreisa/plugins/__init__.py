"""The seams users extend: output sinks and preprocessing operators, each a small Protocol and a registry.

A contract names a sink in ``outputs.formats`` and an operator in ``arrays.<name>.preprocess``;
both are checked against these registries when the contract loads, so there is one list of
what exists and one place that checks it. Adding an output format or an operator is one
module plus one registration::

    @doreisa.register_sink("parquet", table=True)
    class ParquetSink: ...

    @doreisa.register_preprocessor("scale")
    def scale(*, factor: float) -> Preprocessor: ...

Register before the contract loads: import the module in the analytics (``doreisa run
--analytics``) and, for an operator, in the simulation before it creates its ``Bridge``.

This layer imports only the standard library, numpy and :mod:`doreisa.errors` when it loads
(a sink imports what it writes with, xarray, zarr or pyarrow, when it is created): the contract
validates against it, and the simulation's ranks run its operators.

Experimental: the two protocols may still gain methods before 1.0.
"""

from __future__ import annotations

from doreisa.plugins.preprocess import (
    PREPROCESSORS,
    ParamError,
    Preprocessor,
    check_preprocess,
    make_preprocessor,
    register_preprocessor,
)
from doreisa.plugins.registry import PluginRegistry
from doreisa.plugins.sinks import SINKS, Result, Sink, SinkEntry, register_sink
from doreisa.plugins.stores import NetcdfSink, ZarrSink

__all__ = [
    "PREPROCESSORS",
    "SINKS",
    "NetcdfSink",
    "ParamError",
    "PluginRegistry",
    "Preprocessor",
    "Result",
    "Sink",
    "SinkEntry",
    "ZarrSink",
    "check_preprocess",
    "make_preprocessor",
    "register_preprocessor",
    "register_sink",
]

"""Plugins from outside the package, as a user writes them: an operator and an output sink.

Imported by the test (where the contract loads and the sinks run) and by the simulation's
ranks (``fill.py --plugins``), which apply the operator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import doreisa
from doreisa.plugins import ParamError, Result
from doreisa.plugins.sinks import scalar_text


@doreisa.register_preprocessor("toy_negate_scale")
class NegateScale:
    """``-factor * block``: changes every value, keeps shape and dtype."""

    def __init__(self, *, factor: int) -> None:
        if type(factor) is not int:
            raise ParamError(("params", "factor"), f"must be an integer, got {factor!r}")
        self.factor = factor

    def shape_of(self, shape: tuple[int, ...], /) -> tuple[int, ...]:
        return shape

    def dtype_of(self, dtype: np.dtype[Any], /) -> np.dtype[Any]:
        return dtype

    def chunks_of(self, chunks: tuple[tuple[int, ...], ...], /) -> tuple[tuple[int, ...], ...]:
        return chunks

    def apply(self, block: np.ndarray[Any, Any], /) -> np.ndarray[Any, Any]:
        return -self.factor * block


@doreisa.register_sink("toy_jsonl", table=True)
class JsonLines:
    """``toy.jsonl``: one object per result, written at ``close()`` (so an unclosed sink shows)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "toy.jsonl"
        self.rows: list[dict[str, Any]] = []

    def record(self, result: Result, /) -> str | None:
        self.rows.append(
            {
                "analytic": result.analytic,
                "step": result.step,
                "value": scalar_text(result.value),
                "stored": list(result.stored),
            }
        )
        return None

    def close(self) -> None:
        self.path.write_text("".join(json.dumps(row) + "\n" for row in self.rows))

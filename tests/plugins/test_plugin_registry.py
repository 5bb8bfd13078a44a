"""The two registries: what a plugin from outside the package must do, and what the contract checks with them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import doreisa
from doreisa.contract import Contract, parse_contract
from doreisa.errors import ContractError, DoreisaError
from doreisa.plugins import PREPROCESSORS, SINKS, ParamError, PluginRegistry, Result, make_preprocessor


class Scale:
    """A toy operator: multiplies the block by ``factor``; ``dtype`` optional."""

    def __init__(self, *, factor: float, dtype: str = "float64") -> None:
        if not isinstance(factor, int | float) or isinstance(factor, bool):
            raise ParamError(("params", "factor"), f"must be a number, got {factor!r}")
        self.factor, self.target = factor, np.dtype(dtype)

    def shape_of(self, shape: tuple[int, ...], /) -> tuple[int, ...]:
        return shape

    def dtype_of(self, dtype: np.dtype[Any], /) -> np.dtype[Any]:
        return self.target

    def chunks_of(self, chunks: tuple[tuple[int, ...], ...], /) -> tuple[tuple[int, ...], ...]:
        return chunks

    def apply(self, block: np.ndarray[Any, Any], /) -> np.ndarray[Any, Any]:
        return (block * self.factor).astype(self.target)


class Lines:
    """A toy table sink: one text line per result."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "lines.txt"
        self.lines: list[str] = []

    def record(self, result: Result, /) -> str | None:
        self.lines.append(f"{result.analytic} {result.step} {result.stored}")
        return None

    def close(self) -> None:
        self.path.write_text("\n".join(self.lines) + "\n")


@pytest.fixture
def toy_plugins() -> Iterator[None]:
    doreisa.register_preprocessor("toy_scale")(Scale)
    doreisa.register_sink("toy_lines", table=True)(Lines)
    try:
        yield
    finally:
        PREPROCESSORS.unregister("toy_scale")
        SINKS.unregister("toy_lines")


CONTRACT = """
arrays:
  t:
    dtype: float64
    shape: [4]
    preprocess: {function: toy_scale, params: {factor: 2}}
outputs: {formats: [csv, toy_lines]}
"""


def test_plugins_from_outside_are_checked_by_the_contract(toy_plugins: None) -> None:
    contract = parse_contract(CONTRACT)
    assert contract.outputs.formats == ("csv", "toy_lines")
    with pytest.raises(ContractError, match=r"params\.factor: must be a number, got 'x'"):
        parse_contract(CONTRACT.replace("factor: 2", "factor: x"))
    with pytest.raises(ContractError, match=r"takes params \['factor', 'dtype'\]; got \['scale'\]"):
        parse_contract(CONTRACT.replace("factor: 2", "scale: 2"))
    op = make_preprocessor("toy_scale", {"factor": 3, "dtype": "float32"})
    out = op.apply(np.arange(4.0))
    np.testing.assert_array_equal(out, [0, 3, 6, 9])
    assert out.dtype == op.dtype_of(np.dtype("float64")) == np.float32


def test_unregistered_plugins_are_contract_errors_naming_what_exists() -> None:
    with pytest.raises(ContractError, match=r"unknown preprocess 'toy_scale'; registered: downsample, cast, stats"):
        parse_contract(CONTRACT)
    with pytest.raises(ContractError, match=r"outputs\.formats\[1\].*unknown output format 'toy_lines'; registered: "):
        parse_contract(CONTRACT.replace("    preprocess: {function: toy_scale, params: {factor: 2}}\n", ""))


def test_a_format_listed_twice_is_refused() -> None:
    with pytest.raises(ContractError, match=r"outputs\.formats\[1\].*'csv' is listed twice"):
        parse_contract("arrays:\n  t: {dtype: float64, shape: [4]}\noutputs: {formats: [csv, csv]}\n")


def test_a_rank_takes_the_contract_without_the_analytics_plugins(toy_plugins: None) -> None:
    loaded = parse_contract(CONTRACT)
    SINKS.unregister("toy_lines")  # as in a rank, which never imports the analytics' sinks
    try:
        assert Contract.from_plain(loaded.to_plain()) == loaded
        with pytest.raises(ContractError, match="unknown output format 'toy_lines'"):
            parse_contract(CONTRACT)  # a contract loaded from its file is checked in full
    finally:
        doreisa.register_sink("toy_lines", table=True)(Lines)


def test_duplicates_and_bad_names_are_refused(toy_plugins: None) -> None:
    with pytest.raises(DoreisaError, match=r"preprocess 'toy_scale' is already registered \(.*Scale\)"):
        doreisa.register_preprocessor("toy_scale")(Scale)
    with pytest.raises(DoreisaError, match=r"output format 'csv' is already registered"):
        doreisa.register_sink("csv")(Lines)
    with pytest.raises(DoreisaError, match=r"output format name 'my-sink' must be an identifier"):
        doreisa.register_sink("my-sink")(Lines)


def test_an_operator_with_variadic_parameters_is_refused() -> None:
    def loose(**params: Any) -> Scale:
        return Scale(**params)

    with pytest.raises(DoreisaError, match=r"preprocess 'loose': .*loose takes \*params; name each parameter instead"):
        doreisa.register_preprocessor("loose")(loose)
    assert "loose" not in PREPROCESSORS


def test_registry_lookups() -> None:
    registry: PluginRegistry[int] = PluginRegistry("thing")
    registry.add("a", 1)
    registry.add("b", 2)
    assert (registry.names(), list(registry), "a" in registry, registry.get("b")) == (["a", "b"], ["a", "b"], True, 2)
    with pytest.raises(KeyError, match=r"no thing 'c'; registered: a, b"):
        registry.get("c")
    assert registry.unregister("a") == 1 and registry.names() == ["b"]

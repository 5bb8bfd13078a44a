"""Chunk-local preprocessing: the planned shape, chunks and dtype match what ``apply`` produces."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from doreisa.contract import parse_contract
from doreisa.errors import BlockMismatchError, ContractError
from doreisa.plugins import Preprocessor, make_preprocessor

SHAPES = [(1,), (7,), (8,), (3, 5), (4, 4), (1, 9), (2, 3, 5), (6, 1, 7)]


def _make(function: str, **params: Any) -> Preprocessor:
    return make_preprocessor(function, params)


def _contract_with(preprocess: str) -> str:
    return f"arrays:\n  t:\n    dtype: float64\n    shape: [8]\n    preprocess: {preprocess}\n"


@pytest.mark.parametrize(("factor", "shape"), list(itertools.product([1, 2, 3, 5], SHAPES)))
def test_downsample_plan_matches_result(factor: int, shape: tuple[int, ...]) -> None:
    pre = _make("downsample", factor=factor)
    block = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    out = pre.apply(block)
    assert out.shape == pre.shape_of(shape)
    assert out.dtype == pre.dtype_of(block.dtype) == np.float32
    np.testing.assert_array_equal(out, block[(slice(None, None, factor),) * len(shape)])


def test_downsample_values_and_chunks() -> None:
    pre = _make("downsample", factor=2)
    np.testing.assert_array_equal(pre.apply(np.arange(20).reshape(4, 5)), [[0, 2, 4], [10, 12, 14]])
    assert pre.chunks_of(((4, 3, 3), (5,))) == ((2, 2, 2), (3,))


@pytest.mark.parametrize(("target", "shape"), list(itertools.product(["float32", "int16", "complex128"], SHAPES)))
def test_cast_plan_matches_result(target: str, shape: tuple[int, ...]) -> None:
    pre = _make("cast", dtype=target)
    block = np.linspace(-3.0, 3.0, int(np.prod(shape))).reshape(shape)
    out = pre.apply(block)
    assert out.shape == pre.shape_of(shape) == shape
    assert out.dtype == pre.dtype_of(block.dtype) == np.dtype(target)
    np.testing.assert_array_equal(out, block.astype(target))
    assert pre.chunks_of(((2, 3),)) == ((2, 3),)


@pytest.mark.parametrize("shape", SHAPES)
def test_stats_plan_matches_result(shape: tuple[int, ...]) -> None:
    pre = _make("stats")
    block = np.arange(np.prod(shape), dtype=np.int32).reshape(shape) - 3
    out = pre.apply(block)
    assert out.shape == pre.shape_of(shape) == (1,) * len(shape) + (4,)
    assert out.dtype == pre.dtype_of(block.dtype) == np.float64
    np.testing.assert_array_equal(out.reshape(4), [block.min(), block.max(), block.sum(), block.size])


def test_stats_chunks_get_one_row_per_block() -> None:
    assert _make("stats").chunks_of(((4, 3, 3), (5, 5))) == ((1, 1, 1), (1, 1), (4,))


def test_user_function_keeps_shape() -> None:
    pre = _make("numpy:negative")
    block = np.arange(6.0).reshape(2, 3)
    out = pre.apply(block)
    np.testing.assert_array_equal(out, -block)
    assert out.shape == pre.shape_of(block.shape)
    assert out.dtype == pre.dtype_of(block.dtype)


def test_user_function_changing_shape_is_refused() -> None:
    pre = _make("numpy:ravel")
    with pytest.raises(BlockMismatchError, match=r"'numpy:ravel' returned shape \(6,\) for a block of shape \(2, 3\)"):
        pre.apply(np.zeros((2, 3)))


def test_user_function_that_cannot_be_imported() -> None:
    with pytest.raises(ContractError, match=r"preprocess 'numpy:no_such_fn' cannot be imported in the simulation"):
        _make("numpy:no_such_fn")
    with pytest.raises(ContractError, match=r"'no_such_module_xyz:f' cannot be imported"):
        _make("no_such_module_xyz:f")


def test_user_function_declared_dtype_is_planned() -> None:
    pre = _make("numpy:isnan", dtype="bool")
    block = np.array([1.0, np.nan])
    assert pre.dtype_of(block.dtype) == np.bool_ == pre.apply(block).dtype
    np.testing.assert_array_equal(pre.apply(block), [False, True])


# -- bad parameters: one check, at contract load and again where the rank builds the operator ----------


@pytest.mark.parametrize(
    ("preprocess", "match"),
    [
        ("{function: downsample, params: {factor: 0}}", r"params\.factor: must be a positive integer, got 0"),
        ("{function: downsample, params: {factor: 1.5}}", r"params\.factor: must be a positive integer, got 1\.5"),
        ("{function: downsample, params: {factor: true}}", r"params\.factor: must be a positive integer, got True"),
        ("{function: downsample}", r"preprocess downsample takes params \['factor'\]; got \[\]"),
        (
            "{function: cast, params: {dtype: object}}",
            r"params\.dtype: must be one of bool, .*complex128; got 'object'",
        ),
        (
            "{function: cast, params: {dtype: float64, factor: 2}}",
            r"takes params \['dtype'\]; got \['dtype', 'factor'\]",
        ),
        ("{function: stats, params: {factor: 2}}", r"preprocess stats takes params none"),
        ("smooth", r"unknown preprocess 'smooth'; registered: downsample, cast, stats, or 'module:function'"),
        ("{function: 'numpy:negative', params: {dtype: nope}}", r"params\.dtype: must be one of bool, .*; got 'nope'"),
        ("{function: 'numpy:negative', params: {factor: 2}}", r"a user preprocess takes only params\.dtype"),
        ("'numpy:'", r"preprocess\.function: 'numpy:' is not 'module:function'"),
    ],
)
def test_contract_refuses_bad_preprocess(preprocess: str, match: str) -> None:
    with pytest.raises(ContractError, match=match):
        parse_contract(_contract_with(preprocess))


@pytest.mark.parametrize(
    ("function", "params", "match"),
    [
        ("downsample", {"factor": 0}, r"preprocess downsample: params\.factor: must be a positive integer, got 0"),
        ("downsample", {"factor": "2"}, r"params\.factor: must be a positive integer, got '2'"),
        ("downsample", {}, r"preprocess downsample: params: preprocess downsample takes params \['factor'\]; got \[\]"),
        ("cast", {"dtype": "not_a_dtype"}, r"preprocess cast: params\.dtype: must be a numpy dtype name; got"),
        ("stats", {"factor": 2}, r"preprocess stats takes params none; got \['factor'\]"),
    ],
)
def test_the_rank_checks_parameters_with_the_same_code(function: str, params: dict[str, Any], match: str) -> None:
    with pytest.raises(ContractError, match=match):
        make_preprocessor(function, params)


def test_an_operator_not_registered_in_the_rank_says_what_to_import() -> None:
    with pytest.raises(
        ContractError,
        match=r"preprocess 'smooth' is not registered in this process \(registered: "
        r"downsample, cast, stats.*\); import the module that registers it before the Bridge",
    ):
        make_preprocessor("smooth", {})

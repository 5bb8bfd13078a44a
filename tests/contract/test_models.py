"""Behaviour of the contract models: frozen, defaults, regions, overrides."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from doreisa.contract import (
    AnalyticSpec,
    ArraySpec,
    Backpressure,
    Cadence,
    Contract,
    FeedbackPolicy,
    Handover,
    Monitor,
    Outputs,
    Placement,
    Preprocess,
    Slice,
    Timeouts,
    parse_contract,
)
from doreisa.contract.expressions import Expression
from doreisa.contract.models import DTYPES, LocatedError
from doreisa.errors import ContractError
from doreisa.plugins import PREPROCESSORS, SINKS


def _array(**extra: object) -> ArraySpec:
    return ArraySpec.model_validate({"dtype": "float64", "shape": [10, 8], **extra})


def _contract(**extra: object) -> Contract:
    return Contract.model_validate({"arrays": {"t": {"dtype": "float64", "shape": [10, 8]}}, **extra})


# --- frozen


def test_contract_is_frozen() -> None:
    contract = _contract()
    with pytest.raises(ValidationError, match="frozen"):
        contract.cadence = Cadence(every=2)  # type: ignore[misc]


def test_nested_models_are_frozen() -> None:
    contract = _contract()
    with pytest.raises(ValidationError, match="frozen"):
        contract.arrays["t"].dtype = "int32"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        contract.cadence.every = 3  # type: ignore[misc]
    assert isinstance(contract.arrays["t"].shape, tuple)


def test_unknown_keys_are_rejected_by_every_model() -> None:
    for model, data in [
        (Slice, {}),
        (Cadence, {"every": 1}),
        (Preprocess, {"function": "cast", "params": {"dtype": "float32"}}),
        (Monitor, {"array": "t", "reductions": ["max"]}),
        (FeedbackPolicy, {}),
        (Placement, {}),
        (Backpressure, {}),
        (Timeouts, {}),
        (Outputs, {}),
        (AnalyticSpec, {"function": "mean", "arrays": ["t"]}),
    ]:
        model.model_validate(data)
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            model.model_validate({**data, "windw": 3})


# --- defaults


def test_contract_defaults() -> None:
    contract = _contract()
    assert contract.version == 1
    assert contract.cadence == Cadence(every=1)
    assert contract.triggers == ()
    assert contract.analytics == ()
    assert contract.monitors == ()
    assert contract.feedback == FeedbackPolicy(mode="async", lag=2, sync_every=1, enabled=False)
    assert contract.placement == Placement(mode="in_situ", analytics_resource="doreisa_analytics")
    assert contract.backpressure == Backpressure(max_in_flight=4, policy="block", staging_mb=64)
    assert contract.handover == Handover(poll_ms=1.0, linger_ms=250.0)
    assert contract.timeouts == Timeouts(connect=60.0, step=300.0, block=600.0, analytic=300.0)
    assert contract.outputs == Outputs(directory=None, formats=("csv", "npy"))


def test_array_defaults() -> None:
    spec = _array()
    assert spec.block is None
    assert spec.dims is None
    assert spec.select is None
    assert spec.preprocess is None
    assert spec.window is None
    assert spec.cadence is None
    assert spec.placement is None
    assert spec.ndim == 2


def test_cadence_defaults() -> None:
    cadence = Cadence(every=5)
    assert (cadence.start, cadence.stop, cadence.every_time) == (0, None, None)
    assert not cadence.by_time
    assert Cadence(every_time=0.5).by_time


def test_timeouts_are_floats() -> None:
    assert isinstance(Timeouts().connect, float)
    assert Timeouts.model_validate({"step": 10}).step == 10.0


def test_every_dtype_is_accepted() -> None:
    for dtype in DTYPES:
        assert _array(dtype=dtype).dtype == dtype


def test_analytic_label_and_array_names() -> None:
    assert AnalyticSpec(function="mean", arrays=("t",)).label == "mean"
    assert AnalyticSpec(function="pkg.mod:fn", arrays=("t",)).label == "fn"
    assert AnalyticSpec(function="mean", name="m", arrays=("t",)).label == "m"
    by_param = AnalyticSpec.model_validate({"function": "f", "arrays": {"a": "t", "b": "u"}})
    assert by_param.array_names == ("t", "u")
    assert AnalyticSpec(function="f", arrays=("t", "u")).array_names == ("t", "u")


def test_preprocess_shorthand() -> None:
    assert _array(preprocess="stats").preprocess == Preprocess(function="stats")
    spec = _array(preprocess={"function": "downsample", "params": {"factor": 2}})
    assert spec.preprocess is not None
    assert spec.preprocess.params == {"factor": 2}
    assert Preprocess.model_validate("stats") == Preprocess(function="stats")
    assert _array(preprocess="pkg.units:to_kelvin").preprocess == Preprocess(function="pkg.units:to_kelvin")
    yaml_text = "arrays:\n  t:\n    dtype: float64\n    shape: [4]\n    preprocess: pkg.units:to_kelvin\n"
    assert parse_contract(yaml_text).arrays["t"].preprocess == Preprocess(function="pkg.units:to_kelvin")


def test_params_keep_their_types() -> None:
    spec = AnalyticSpec.model_validate(
        {"function": "f", "arrays": ["t"], "params": {"i": 3, "f": 2.5, "s": "x", "b": True, "l": [1, 2]}}
    )
    assert spec.params == {"i": 3, "f": 2.5, "s": "x", "b": True, "l": [1, 2]}
    assert type(spec.params["i"]) is int
    assert type(spec.params["b"]) is bool


# --- preprocess


def test_preprocess_builtins_are_pinned() -> None:
    builtins = {name: PREPROCESSORS.get(name).params for name in ("downsample", "cast", "stats")}
    assert builtins == {"downsample": ("factor",), "cast": ("dtype",), "stats": ()}
    assert PREPROCESSORS.names()[:3] == ["downsample", "cast", "stats"]


def test_sink_builtins_are_pinned() -> None:
    assert SINKS.names()[:2] == ["npy", "csv"]
    assert (SINKS.get("npy").table, SINKS.get("csv").table) == (False, True)


@pytest.mark.parametrize(
    "data",
    [
        {"function": "downsample", "params": {"factor": 1}},
        {"function": "downsample", "params": {"factor": 4}},
        {"function": "cast", "params": {"dtype": "float32"}},
        {"function": "stats"},
        {"function": "stats", "params": {}},
        {"function": "mypkg.units:to_kelvin"},
        {"function": "mypkg.units:to_kelvin", "params": {"dtype": "float32"}},
    ],
    ids=lambda d: f"{d['function']}{d.get('params', '')}",
)
def test_valid_preprocess(data: dict[str, object]) -> None:
    spec = Preprocess.model_validate(data)
    assert spec.function == data["function"]
    assert spec.params == data.get("params", {})


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"function": "gzip"}, r"function: unknown preprocess 'gzip'; registered: downsample, cast, stats, or 'module"),
        ({"function": "downsample"}, r"params: preprocess downsample takes params \['factor'\]; got \[\]"),
        ({"function": "downsample", "params": {"factor": 0}}, r"params\.factor: must be a positive integer, got 0"),
        ({"function": "downsample", "params": {"factor": -2}}, r"params\.factor: must be a positive integer, got -2"),
        ({"function": "downsample", "params": {"factor": 2.0}}, r"params\.factor: must be a positive int.*got 2\.0"),
        ({"function": "downsample", "params": {"factor": True}}, r"params\.factor: must be a positive int.*got True"),
        ({"function": "downsample", "params": {"factor": 2, "dtype": "float32"}}, r"takes params \['factor'\]"),
        ({"function": "cast"}, r"params: preprocess cast takes params \['dtype'\]; got \[\]"),
        (
            {"function": "cast", "params": {"dtype": "float16"}},
            r"params\.dtype: must be one of bool, .*; got 'float16'",
        ),
        ({"function": "cast", "params": {"dtype": 32}}, r"params\.dtype: must be one of bool, .*; got 32"),
        ({"function": "stats", "params": {"bins": 4}}, r"params: preprocess stats takes params none; got \['bins'\]"),
    ],
    ids=[
        "unknown",
        "downsample-no-factor",
        "factor-0",
        "factor-negative",
        "factor-float",
        "factor-bool",
        "downsample-extra-param",
        "cast-no-dtype",
        "cast-bad-dtype",
        "cast-dtype-not-a-string",
        "stats-with-params",
    ],
)
def test_invalid_preprocess(data: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Preprocess.model_validate(data)


def test_preprocess_error_inside_an_array_names_the_array() -> None:
    with pytest.raises(ContractError, match=r"<contract>:2:\d+: arrays\.t\.preprocess\.params\.factor: must be"):
        parse_contract(
            "arrays:\n  t: {dtype: float64, shape: [4], preprocess: {function: downsample, params: {factor: 0}}}\n"
        )


# --- regions


@pytest.mark.parametrize(
    ("size", "select", "region", "shape"),
    [
        (10, {}, (0, 10, 1), 10),
        (10, {"start": 1, "stop": 10, "step": 3}, (1, 10, 3), 3),  # 1, 4, 7
        (10, {"start": 1, "step": 3}, (1, 10, 3), 3),
        (10, {"start": 0, "step": 3}, (0, 10, 3), 4),  # 0, 3, 6, 9
        (10, {"step": 2}, (0, 10, 2), 5),
        (10, {"start": 9}, (9, 10, 1), 1),
        (10, {"start": 2, "stop": 5}, (2, 5, 1), 3),
        (10, {"step": 20}, (0, 10, 20), 1),
    ],
)
def test_region_and_selected_shape(size: int, select: dict[str, int], region: tuple[int, int, int], shape: int) -> None:
    spec = ArraySpec.model_validate({"dtype": "float32", "shape": [size], "select": [select]})
    assert spec.region == (region,)
    assert spec.selected_shape == (shape,)
    assert len(range(*region)) == shape


def test_region_without_select_is_the_whole_array() -> None:
    spec = _array()
    assert spec.region == ((0, 10, 1), (0, 8, 1))
    assert spec.selected_shape == (10, 8)


def test_select_by_dim_name_becomes_a_list() -> None:
    spec = _array(dims=["y", "x"], select={"x": {"step": 2}})
    assert spec.select == (Slice(), Slice(step=2))
    assert spec.region == ((0, 10, 1), (0, 8, 2))
    assert spec.selected_shape == (10, 4)
    assert spec == _array(dims=["y", "x"], select=[{}, {"step": 2}])


def test_select_by_dim_name_in_yaml() -> None:
    contract = parse_contract(
        "arrays:\n  t:\n    dtype: float64\n    shape: [10, 8]\n    dims: [y, x]\n"
        "    select:\n      y: {start: 2, stop: 6}\n"
    )
    assert contract.arrays["t"].select == (Slice(start=2, stop=6), Slice())
    assert contract.arrays["t"].selected_shape == (4, 8)


def test_slice_bounds() -> None:
    assert Slice().bounds(7) == (0, 7, 1)
    assert Slice(start=1, stop=3, step=2).bounds(7) == (1, 3, 2)


# --- overrides


def test_cadence_of_override() -> None:
    contract = Contract.model_validate(
        {
            "arrays": {
                "t": {"dtype": "float64", "shape": [4]},
                "p": {"dtype": "float64", "shape": [4], "cadence": {"every": 50}},
            },
            "cadence": {"every": 10},
        }
    )
    assert contract.cadence_of("t") == Cadence(every=10)
    assert contract.cadence_of("p") == Cadence(every=50)


def test_placement_of_override() -> None:
    contract = Contract.model_validate(
        {
            "arrays": {
                "t": {"dtype": "float64", "shape": [4]},
                "p": {"dtype": "float64", "shape": [4], "placement": {"mode": "in_transit"}},
            },
            "placement": {"mode": "in_situ"},
        }
    )
    assert contract.placement_of("t").mode == "in_situ"
    assert contract.placement_of("p") == Placement(mode="in_transit")


# --- triggers


def test_trigger_expressions() -> None:
    contract = Contract.model_validate(
        {
            "arrays": {"t": {"dtype": "float64", "shape": [4]}},
            "triggers": [
                {"name": "hot", "when": "max(t) > 350", "until": "max(t) < 340", "action": {"cadence": {"every": 1}}},
                {"name": "late", "when": "step > 100", "action": {"cadence": {"every": 2}, "arrays": ["t"]}},
            ],
        }
    )
    exprs = contract.trigger_expressions
    assert list(exprs) == ["hot", "late"]
    when, until = exprs["hot"]
    assert isinstance(when, Expression)
    assert until is not None
    assert when.reductions == {("max", "t")}
    assert when.evaluate({("max", "t"): 351.0}, step=0, time=None) is True
    assert until.evaluate({("max", "t"): 345.0}, step=0, time=None) is False
    assert exprs["late"][1] is None
    assert contract.triggers[0].priority == 0
    assert contract.trigger_expressions is exprs  # parsed once


def test_cached_trigger_expressions_do_not_change_equality() -> None:
    a = parse_contract("arrays: {t: {dtype: float64, shape: [4]}}\n")
    b = parse_contract("arrays: {t: {dtype: float64, shape: [4]}}\n")
    assert a.trigger_expressions == {}
    assert a == b


# --- located errors, used directly (without the loader)


def test_cross_field_error_names_its_key_without_the_loader() -> None:
    with pytest.raises(ValidationError, match=r"block: block \[3\] does not tile shape \[10\]"):
        ArraySpec.model_validate({"dtype": "float64", "shape": [10], "block": [3]})


def test_located_error() -> None:
    err = LocatedError(("triggers", 0, "when"), "bad")
    assert err.loc == ("triggers", 0, "when")
    assert err.message == "bad"
    assert str(err) == "triggers[0].when: bad"
    assert str(LocatedError((), "bad")) == "bad"
    assert isinstance(err, ValueError)


def test_model_round_trip() -> None:
    contract = parse_contract(
        "arrays:\n  t: {dtype: float64, shape: [16, 16], block: [8, 8], preprocess: stats}\n"
        "  p: {dtype: float32, shape: [16], preprocess: {function: downsample, params: {factor: 2}}}\n"
        "monitors:\n  - {array: t, reductions: [max, mean], every: 2, select: [{start: 4}, {}]}\n"
        "feedback: {mode: deterministic, lag: 3, enabled: true}\n"
        "triggers:\n  - {name: hot, when: max(t) > 1, action: {cadence: {every: 2}}}\n"
        "analytics:\n  - {function: mean, arrays: [t]}\n"
    )
    assert Contract.model_validate(contract.model_dump()) == contract

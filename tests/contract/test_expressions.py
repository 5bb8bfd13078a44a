"""The safe expression language of triggers, on its own."""

from __future__ import annotations

import math

import pytest

from doreisa.contract.expressions import MAX_DEPTH, MAX_LENGTH, Expression, NoHistory, Past, parse_expression
from doreisa.errors import ContractError, ExpressionError

ARRAYS = frozenset({"temperature", "pressure"})


def _eval(source: str, values: dict[tuple[str, str], float] | None = None, *, step: int = 0, time: float | None = 0.0):
    return parse_expression(source, arrays=ARRAYS).evaluate(values or {}, step=step, time=time)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3 == 7", True),
        ("(1 + 2) * 3 == 9", True),
        ("2 ** 3 ** 2", 512),  # right associative
        ("-2 ** 2", -4),  # ** binds tighter than unary minus
        ("(-2) ** 2", 4),
        ("- -3", 3),
        ("+3", 3),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("7 / 2", 3.5),
        ("10 - 4 - 3", 3),  # left associative
        ("abs(-2.5)", 2.5),
        ("sqrt(16)", 4.0),
        ("log(1)", 0.0),
        ("pi > 3.14 and pi < 3.15", True),
        ("1 < inf", True),
        ("-inf < -1e308", True),
    ],
)
def test_arithmetic_and_precedence(source: str, expected: float | bool) -> None:
    assert _eval(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1e5", 100_000.0),
        ("1E-3", 0.001),
        ("1_000", 1000),
        ("0x10", 16),
        ("0o17", 15),
        ("0b101", 5),
        (".5", 0.5),
        ("3.", 3.0),
        ("2.5e+2", 250.0),
        ("1_000.000_1", 1000.0001),
    ],
)
def test_number_notations(source: str, expected: float) -> None:
    assert _eval(source) == expected


def test_inf_is_a_constant() -> None:
    assert _eval("inf") == math.inf
    assert _eval("-inf") == -math.inf


@pytest.mark.parametrize(
    ("source", "step", "expected"),
    [
        ("0 < step < 10", 5, True),
        ("0 < step < 10", 0, False),
        ("0 < step < 10", 10, False),
        ("0 <= step <= 10 != 11", 10, True),
        ("1 < 3 > 2", 0, True),  # a chain is a and b, not (1 < 3) > 2
        ("1 < 3 > 2 == 2", 0, True),
        ("step == 4", 4, True),
        ("step != 4", 4, False),
        ("step >= 4", 4, True),
    ],
)
def test_comparison_chains(source: str, step: int, expected: bool) -> None:
    assert _eval(source, step=step) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("not 1 == 2", True),  # not binds looser than ==
        ("not step > 5 or step > 0", True),  # (not a) or b
        ("step > 5 or step > 0 and step > 10", False),  # and before or
        ("(step > 5 or step > 0) and step > 10", False),
        ("step > 0 and not step > 10", True),
        ("not not step", True),
    ],
)
def test_boolean_precedence(source: str, expected: bool) -> None:
    assert _eval(source, step=3) is expected


def test_and_or_short_circuit() -> None:
    # The right side needs a reduction we do not have; it is never evaluated.
    assert _eval("step > 5 and max(temperature) > 1", step=1) is False
    assert _eval("step < 5 or max(temperature) > 1", step=1) is True
    with pytest.raises(ExpressionError, match=r"no value for max\(temperature\)"):
        _eval("step < 5 and max(temperature) > 1", step=1)


def test_comparison_chain_short_circuits() -> None:
    assert _eval("step > 5 > max(temperature)", step=1) is False


def test_reductions_read_their_values() -> None:
    values = {("max", "temperature"): 351.0, ("mean", "pressure"): 2.0}
    assert _eval("max(temperature) > 350 and mean(pressure) * 2 == 4", values) is True
    assert _eval("max(temperature) - mean(pressure)", values) == 349.0
    assert _eval("sqrt(mean(pressure) ** 2)", values) == 2.0


def test_reductions_set() -> None:
    expr = parse_expression(
        "max(temperature) > 350 or min(temperature) < 0 or std(pressure) > mean(pressure) + sum(pressure)",
        arrays=ARRAYS,
    )
    assert expr.reductions == {
        ("max", "temperature"),
        ("min", "temperature"),
        ("std", "pressure"),
        ("mean", "pressure"),
        ("sum", "pressure"),
    }
    assert parse_expression("step > 1", arrays=ARRAYS).reductions == frozenset()


def test_expression_keeps_its_source() -> None:
    expr = parse_expression("  step > 1 ", arrays=ARRAYS)
    assert isinstance(expr, Expression)
    assert expr.source == "  step > 1 "
    assert expr == parse_expression("  step > 1 ", arrays=ARRAYS)


def test_time() -> None:
    assert _eval("time >= 1.5", time=2.0) is True
    with pytest.raises(ExpressionError, match="uses 'time' but the simulation published no time"):
        _eval("time >= 1.5", time=None)
    # Without `time` in the expression, an unknown time is fine.
    assert _eval("step >= 1", step=1, time=None) is True


def test_missing_reduction() -> None:
    with pytest.raises(ExpressionError, match=r"no value for mean\(pressure\) when evaluating 'mean\(pressure\) > 1'"):
        _eval("mean(pressure) > 1", {("max", "pressure"): 1.0})


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("1 / 0", "division by zero"),
        ("step % 0", "modulo by zero|division by zero"),
        ("sqrt(-1)", "math domain error"),
        ("log(0)", "math domain error"),
        ("9 ** 9 ** 9", "Overflow|out of range"),
        ("10 ** 400", "Overflow|out of range"),
        ("(-8) ** 0.5", "math domain error"),
    ],
)
def test_arithmetic_failures_are_expression_errors(source: str, match: str) -> None:
    expr = parse_expression(source, arrays=ARRAYS)
    with pytest.raises(ExpressionError, match=match) as info:
        expr.evaluate({}, step=3, time=0.0)
    assert "at step 3" in str(info.value)


def test_huge_power_fails_fast() -> None:
    # Integer ** would try to build a number with hundreds of millions of digits.
    expr = parse_expression("step ** step ** step", arrays=ARRAYS)
    with pytest.raises(ExpressionError, match="Overflow"):
        expr.evaluate({}, step=99, time=None)


# --- rejections


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("__import__('os').system('id')", "calling anything but a reduction or function name is not allowed"),
        ("().__class__.__bases__", "attribute access is not allowed"),
        ("temperature.__class__", "attribute access is not allowed"),
        ("max(temperature).real", "attribute access is not allowed"),
        ("[1][0]", "subscripting is not allowed"),
        ("(1, 2)", "Tuple syntax is not allowed"),
        ("{1: 2}", "Dict syntax is not allowed"),
        ("{1}", "Set syntax is not allowed"),
        ("[x for x in (1,)]", "ListComp syntax is not allowed"),
        ("lambda: 1", "lambda is not allowed"),
        ("(lambda: 1)()", "calling anything but a reduction or function name is not allowed"),
        ("'abc'", "the constant 'abc' is not allowed"),
        ("b'abc'", "the constant b'abc' is not allowed"),
        ("f'{step}'", "JoinedStr syntax is not allowed"),
        ("True", "the constant True is not allowed"),
        ("None", "the constant None is not allowed"),
        ("...", "the constant Ellipsis is not allowed"),
        ("1j", "the constant 1j is not allowed"),
        ("1 if step else 2", "'x if c else y' is not allowed"),
        ("step in (1, 2)", "'in' and 'is' is not allowed"),
        ("step is 1", "'in' and 'is' is not allowed"),
        ("step not in (1,)", "'in' and 'is' is not allowed"),
        ("~step", "the operator Invert is not allowed"),
        ("step << 2", "the operator LShift is not allowed"),
        ("step & 1", "the operator BitAnd is not allowed"),
        ("step @ step", "the operator MatMult is not allowed"),
        ("(x := 1)", "':=' is not allowed"),
        ("__builtins__", "the name '__builtins__' is not allowed"),
        ("__import__", "the name '__import__' is not allowed"),
        ("eval('1')", "unknown function 'eval'"),
        ("exec", "unknown name 'exec'"),
        ("open", "unknown name 'open'"),
        ("x > 1", "unknown name 'x'"),
        ("temperature > 1", r"array 'temperature' must be reduced to a number.*max\(temperature\)"),
        (
            "max(density) > 1",
            r"max\(\) needs an array name, got 'density'.*known arrays: \['pressure', 'temperature'\]",
        ),
        ("max(1) > 1", r"max\(\) needs an array name, got '1'"),
        ("max(temperature[0])", r"max\(\) needs an array name, got 'temperature\[0\]'"),
        ("max(temperature, pressure)", r"max\(\) takes exactly one argument"),
        ("max(*temperature)", r"max\(\) takes exactly one argument"),
        ("max(x=temperature)", r"max\(\) takes exactly one argument"),
        ("max()", r"max\(\) takes exactly one argument"),
        (
            "median(temperature)",
            r"unknown function 'median'.*reductions: \['max', 'mean', 'min', 'nonfinite', 'std', 'sum'\]",
        ),
        ("sqrt(temperature)", "array 'temperature' must be reduced"),
        ("step >", "not valid syntax"),
        ("step = 1", "not valid syntax"),
        ("import os", "not valid syntax"),
        ("step > 1; step < 2", "not valid syntax"),
        ("", "expression is empty"),
        ("   ", "expression is empty"),
    ],
)
def test_rejected(source: str, match: str) -> None:
    with pytest.raises(ExpressionError, match=match):
        parse_expression(source, arrays=ARRAYS)


def test_rejection_says_what_is_allowed() -> None:
    with pytest.raises(ExpressionError) as info:
        parse_expression("temperature.__class__", arrays=ARRAYS)
    message = str(info.value)
    assert "column 1" in message
    assert (
        "Allowed: numbers, step, time, reductions ['max', 'mean', 'min', 'nonfinite', 'std', 'sum'] of an array"
        in message
    )
    assert "functions ['abs', 'log', 'sqrt']" in message


def test_expression_error_is_a_contract_error() -> None:
    with pytest.raises(ContractError):
        parse_expression("1 +", arrays=ARRAYS)
    assert issubclass(ExpressionError, ValueError)


def test_not_a_string() -> None:
    with pytest.raises(ExpressionError, match="must be a string, got int"):
        parse_expression(3, arrays=ARRAYS)  # type: ignore[arg-type]


# --- limits


def test_length_limit() -> None:
    parse_expression("1" + " " * (MAX_LENGTH - 1), arrays=ARRAYS)
    with pytest.raises(ExpressionError, match=f"{MAX_LENGTH + 1} characters long; the limit is {MAX_LENGTH}"):
        parse_expression("1" + " " * MAX_LENGTH, arrays=ARRAYS)


def test_megabyte_expression() -> None:
    with pytest.raises(ExpressionError, match=f"the limit is {MAX_LENGTH}"):
        parse_expression("1" + " + 1" * 250_000, arrays=ARRAYS)


def test_parenthesis_depth_limit() -> None:
    ok = "(" * MAX_DEPTH + "step" + ")" * MAX_DEPTH
    assert parse_expression(ok, arrays=ARRAYS).evaluate({}, step=2, time=None) == 2
    deep = "(" * (MAX_DEPTH + 1) + "step" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(ExpressionError, match=f"nested too deeply \\(limit {MAX_DEPTH} parentheses\\)"):
        parse_expression(deep, arrays=ARRAYS)


def test_hundred_thousand_parentheses() -> None:
    with pytest.raises(ExpressionError, match=r"characters long|nested too deeply"):
        parse_expression("(" * 100_000 + "1" + ")" * 100_000, arrays=ARRAYS)


@pytest.mark.parametrize("source", ["-" * 500 + "1", "not " * 200 + "step", "+".join(["1"] * 100)])
def test_operator_depth_limit(source: str) -> None:
    with pytest.raises(ExpressionError, match=f"nested too deeply \\(limit {MAX_DEPTH}\\)"):
        parse_expression(source, arrays=ARRAYS)


def test_depth_at_the_limit_is_accepted() -> None:
    source = "-" * MAX_DEPTH + "1"
    assert parse_expression(source, arrays=ARRAYS).evaluate({}, step=0, time=None) == 1
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse_expression("-" + source, arrays=ARRAYS)


# -- history: prev, delta, rate -----------------------------------------------------------

HOT = ("max", "temperature")


def test_history_functions_read_the_previous_evaluation() -> None:
    e = parse_expression("prev(max(temperature)) + delta(max(temperature)) + rate(max(temperature))", arrays=ARRAYS)
    assert e.reductions == e.history == frozenset({HOT})
    before = {HOT: Past(320.0, 10, 2.0)}
    # prev 320, delta 10, rate 10 / (2.5 - 2.0) per unit of simulation time
    assert e.evaluate({HOT: 330.0}, step=12, time=2.5, previous=before) == 320.0 + 10.0 + 20.0
    # without a time at either evaluation: per step
    assert e.evaluate({HOT: 330.0}, step=12, time=None, previous=before) == 320.0 + 10.0 + 5.0
    assert parse_expression("max(temperature) > 1", arrays=ARRAYS).history == frozenset()


def test_history_before_a_previous_value_is_no_history() -> None:
    e = parse_expression("rate(max(temperature)) > 5", arrays=ARRAYS)
    with pytest.raises(NoHistory, match=r"rate\(max\(temperature\)\) has no previous value yet at step 3"):
        e.evaluate({HOT: 330.0}, step=3, time=None)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (
            "prev(temperature)",
            r"prev\(\) takes a reduction of an array, e.g. prev\(max\(temperature\)\).*got 'temperature'",
        ),
        ("delta(prev(max(temperature)))", r"delta\(\) takes a reduction.*got 'prev\(max\(temperature\)\)'"),
        ("rate(3)", r"rate\(\) takes a reduction.*got '3'"),
        ("rate(max(density))", r"max\(\) needs an array name, got 'density'"),
        ("prev(max(temperature), 2)", r"prev\(\) takes exactly one argument"),
        ("median(temperature)", r"history of a reduction: \['prev', 'delta', 'rate'\]"),
    ],
)
def test_history_rejected(source: str, match: str) -> None:
    with pytest.raises(ExpressionError, match=match):
        parse_expression(source, arrays=ARRAYS)


def test_rate_with_no_time_change_is_an_evaluation_error() -> None:
    e = parse_expression("rate(max(temperature)) > 5", arrays=ARRAYS)
    with pytest.raises(ExpressionError, match=r"evaluating .* at step 4 failed: float division by zero"):
        e.evaluate({HOT: 1.0}, step=4, time=1.0, previous={HOT: Past(0.0, 3, 1.0)})

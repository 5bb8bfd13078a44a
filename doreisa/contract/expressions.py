"""The safe expression language of triggers and monitors.

An expression is parsed with :func:`ast.parse` in ``eval`` mode and then checked against a
whitelist: numbers, the names ``step`` and ``time``, reductions of arrays such as
``max(temperature)``, their history (``prev``, ``delta``, ``rate`` of a reduction: its value
at the previous evaluation, the change since, the change per unit of simulation time or per
step), comparisons (chains allowed), ``and``/``or``/``not``, and the
arithmetic operators ``+ - * / // % **``. Nothing else is accepted: no attributes, no
subscripts, no strings, no other calls, no dunder names. The checked tree is evaluated by
a small interpreter below; Python's ``eval`` is never called.

Examples
--------
>>> e = parse_expression("max(temperature) > 350 and step >= 100", arrays={"temperature"})
>>> sorted(e.reductions)
[('max', 'temperature')]
>>> e.evaluate({("max", "temperature"): 351.0}, step=120, time=0.0)
True
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from doreisa.errors import ExpressionError

#: Reductions an expression may apply to an array, with their numpy names.
REDUCTIONS: dict[str, str] = {
    "max": "max",
    "min": "min",
    "mean": "mean",
    "sum": "sum",
    "std": "std",
    "nonfinite": "nonfinite",  # how many NaN and Inf: a simulation blowing up
}
#: Scalar functions an expression may apply to a number.
SCALAR_FUNCTIONS: dict[str, Callable[[float], float]] = {"abs": abs, "sqrt": math.sqrt, "log": math.log}
#: Functions of a reduction's history: its value at the previous evaluation, the change since,
#: and the change per unit of simulation time (per step when either evaluation had no time).
HISTORY = ("prev", "delta", "rate")
#: Names that stand for a number without a call.
VARIABLES = ("step", "time")
CONSTANTS: dict[str, float] = {"inf": math.inf, "pi": math.pi}

MAX_LENGTH = 1000
MAX_DEPTH = 32


def _div(a: float, b: float) -> float:
    return a / b


def _floordiv(a: float, b: float) -> float:
    return a // b


_BINOPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: _div,
    ast.FloorDiv: _floordiv,
    ast.Mod: operator.mod,
    # math.pow, not **: integer `9 ** 9 ** 9` would run for hours; a float overflows at once.
    ast.Pow: math.pow,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}

Reduction = tuple[str, str]
Values = Mapping[Reduction, float]


@dataclass(frozen=True)
class Past:
    """A reduction's value at an earlier evaluation: what ``prev``, ``delta`` and ``rate`` read."""

    value: float
    step: int
    time: float | None


History = Mapping[Reduction, Past]


class NoHistory(ExpressionError):
    """The expression reads the history of a reduction that has been evaluated only once (or never)."""


@dataclass(frozen=True)
class Expression:
    """A checked expression, ready to evaluate.

    Attributes
    ----------
    source : str
        The text as written in the contract.
    reductions : frozenset of (function, array)
        The array reductions the expression needs, e.g. ``{("max", "temperature")}``, those
        inside ``prev``/``delta``/``rate`` included.
    history : frozenset of (function, array)
        The reductions whose previous value the expression reads.
    """

    source: str
    reductions: frozenset[Reduction]
    _tree: ast.expr = field(repr=False, compare=False)
    history: frozenset[Reduction] = frozenset()

    def evaluate(
        self,
        values: Values,
        *,
        step: int,
        time: float | None,
        previous: History | None = None,
        observed: History | None = None,
    ) -> float | bool:
        """Evaluate with the given reduction values, the current step and time, and the reductions' past.

        ``previous``: each reduction's evaluation before the one in ``values``; ``observed``: the
        step and time of the one in ``values``, when not the current ones (a monitor that runs
        less often than another the expression reads).

        Raises
        ------
        NoHistory
            If the expression reads the history of a reduction not in ``previous`` (its first evaluation).
        ExpressionError
            If a needed reduction is missing from ``values``, ``time`` is needed but unknown, or
            the arithmetic fails (division by zero, overflow, ``sqrt`` or ``log`` of a negative).
        """
        try:
            return _Evaluator(values, step, time, self.source, (previous or {}, observed or {})).visit(self._tree)
        except (ArithmeticError, ValueError, TypeError) as exc:
            if isinstance(exc, ExpressionError):
                raise
            raise ExpressionError(
                f"evaluating {self.source!r} at step {step} failed: {exc} ({type(exc).__name__})"
            ) from exc


def parse_expression(source: str, *, arrays: Iterable[str]) -> Expression:
    """Parse and check ``source`` against the whitelist.

    Parameters
    ----------
    source : str
        The expression text.
    arrays : iterable of str
        The array names the contract declares; any other name is an error.

    Raises
    ------
    ExpressionError
        With a message that says what is not allowed and what is.
    """
    if not isinstance(source, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ExpressionError(f"an expression must be a string, got {type(source).__name__}")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(source)} characters long; the limit is {MAX_LENGTH}")
    if not source.strip():
        raise ExpressionError("expression is empty")
    _check_nesting(source)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"expression {source!r} is not valid syntax: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"expression is nested too deeply (limit {MAX_DEPTH})") from None
    checker = _Checker(frozenset(arrays), source)
    checker.visit(tree.body, depth=0)
    return Expression(source, frozenset(checker.reductions), tree.body, frozenset(checker.history))


def _check_nesting(source: str) -> None:
    depth = 0
    for char in source:
        if char == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise ExpressionError(f"expression is nested too deeply (limit {MAX_DEPTH} parentheses)")
        elif char == ")":
            depth -= 1


class _Checker:
    def __init__(self, arrays: frozenset[str], source: str) -> None:
        self.arrays = arrays
        self.source = source
        self.reductions: set[Reduction] = set()
        self.history: set[Reduction] = set()

    def fail(self, node: ast.AST, what: str) -> ExpressionError:
        col = getattr(node, "col_offset", 0)
        return ExpressionError(
            f"{what} is not allowed in expression {self.source!r} (column {col + 1}). Allowed: numbers, "
            f"{', '.join(VARIABLES)}, reductions {sorted(REDUCTIONS)} of an array, functions "
            f"{sorted(SCALAR_FUNCTIONS)}, {'/'.join(HISTORY)} of a reduction, comparisons, and/or/not "
            "and + - * / // % **"
        )

    def visit(self, node: ast.expr, *, depth: int) -> None:  # noqa: C901 - one branch per node kind
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression {self.source[:40]!r}... is nested too deeply (limit {MAX_DEPTH})")
        children: list[ast.expr]
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.fail(node, f"the constant {node.value!r}")
            children = []
        elif isinstance(node, ast.Name):
            self._check_name(node)
            children = []
        elif isinstance(node, ast.BoolOp):
            children = node.values
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.Not | ast.USub | ast.UAdd):
                raise self.fail(node, f"the operator {type(node.op).__name__}")
            children = [node.operand]
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise self.fail(node, f"the operator {type(node.op).__name__}")
            children = [node.left, node.right]
        elif isinstance(node, ast.Compare):
            if any(type(op) not in _CMPOPS for op in node.ops):
                raise self.fail(node, "'in' and 'is'")
            children = [node.left, *node.comparators]
        elif isinstance(node, ast.Call):
            children = self._check_call(node)
        else:
            raise self.fail(node, _describe(node))
        for child in children:
            self.visit(child, depth=depth + 1)

    def _check_name(self, node: ast.Name) -> None:
        if node.id in VARIABLES or node.id in CONSTANTS:
            return
        if node.id.startswith("__"):
            raise self.fail(node, f"the name {node.id!r}")
        if node.id in self.arrays:
            raise ExpressionError(
                f"array {node.id!r} must be reduced to a number in expression {self.source!r}: "
                f"write e.g. max({node.id}) or mean({node.id})"
            )
        raise ExpressionError(
            f"unknown name {node.id!r} in expression {self.source!r}; known names: "
            f"{sorted([*VARIABLES, *CONSTANTS])}, arrays (inside a reduction): {sorted(self.arrays)}"
        )

    def _check_call(self, node: ast.Call) -> list[ast.expr]:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node, "calling anything but a reduction or function name")
        name = node.func.id
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            raise ExpressionError(f"{name}() takes exactly one argument in expression {self.source!r}")
        if name in SCALAR_FUNCTIONS:
            return [node.args[0]]
        if name in HISTORY:
            inner = node.args[0]
            if not (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id in REDUCTIONS):
                raise ExpressionError(
                    f"{name}() takes a reduction of an array, e.g. {name}(max(temperature)), in expression "
                    f"{self.source!r}; got {ast.unparse(inner)!r}"
                )
            self._check_call(inner)
            assert isinstance(inner.args[0], ast.Name), "checked just above"
            self.history.add((inner.func.id, inner.args[0].id))
            return []
        if name not in REDUCTIONS:
            raise ExpressionError(
                f"unknown function {name!r} in expression {self.source!r}; reductions: {sorted(REDUCTIONS)}, "
                f"functions: {sorted(SCALAR_FUNCTIONS)}, history of a reduction: {list(HISTORY)}"
            )
        arg = node.args[0]
        if not isinstance(arg, ast.Name) or arg.id not in self.arrays:
            shown = arg.id if isinstance(arg, ast.Name) else ast.unparse(arg)
            raise ExpressionError(
                f"{name}() needs an array name, got {shown!r} in expression {self.source!r}; "
                f"known arrays: {sorted(self.arrays)}"
            )
        self.reductions.add((name, arg.id))
        return []


def _describe(node: ast.AST) -> str:
    names: dict[type[ast.AST], str] = {
        ast.Attribute: "attribute access",
        ast.Subscript: "subscripting",
        ast.Lambda: "lambda",
        ast.IfExp: "'x if c else y'",
        ast.NamedExpr: "':='",
    }
    return names.get(type(node), f"{type(node).__name__} syntax")


class _Evaluator:
    def __init__(
        self, values: Values, step: int, time: float | None, source: str, past: tuple[History, History]
    ) -> None:
        self.values = values
        self.step = step
        self.time = time
        self.source = source
        self.previous, self.observed = past

    def visit(self, node: ast.expr) -> float | bool:  # noqa: C901 - one branch per node kind
        if isinstance(node, ast.Constant):
            return node.value  # type: ignore[no-any-return]
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                return all(self.visit(v) for v in node.values)
            return any(self.visit(v) for v in node.values)
        if isinstance(node, ast.UnaryOp):
            value = self.visit(node.operand)
            if isinstance(node.op, ast.Not):
                return not value
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](self.visit(node.left), self.visit(node.right))
        if isinstance(node, ast.Compare):
            left = self.visit(node.left)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self.visit(comparator)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name), "checked at parse time"
        if node.func.id in SCALAR_FUNCTIONS:
            return SCALAR_FUNCTIONS[node.func.id](self.visit(node.args[0]))
        if node.func.id in HISTORY:
            return self._history(node.func.id, node.args[0])
        return self.values[self._key(node)]

    def _key(self, node: ast.expr) -> Reduction:
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name), "checked at parse time"
        arg = node.args[0]
        assert isinstance(arg, ast.Name), "checked at parse time"
        key = (node.func.id, arg.id)
        if key not in self.values:
            raise ExpressionError(f"no value for {key[0]}({key[1]}) when evaluating {self.source!r}")
        return key

    def _history(self, name: str, inner: ast.expr) -> float:
        key = self._key(inner)
        past = self.previous.get(key)
        if past is None:
            raise NoHistory(f"{name}({key[0]}({key[1]})) has no previous value yet at step {self.step}")
        if name == "prev":
            return past.value
        change = self.values[key] - past.value
        if name == "delta":
            return change
        now = self.observed.get(key) or Past(self.values[key], self.step, self.time)
        if now.time is not None and past.time is not None:
            return change / (now.time - past.time)
        return change / (now.step - past.step)

    def _name(self, name: str) -> float:
        if name == "step":
            return self.step
        if name == "time":
            if self.time is None:
                raise ExpressionError(f"{self.source!r} uses 'time' but the simulation published no time")
            return self.time
        return CONSTANTS[name]

"""Registration of analytics: ``@analytic`` checks signatures at import time."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import doreisa
from doreisa.analytics import Analytic, Registry, analytic, default_registry
from doreisa.analytics.registry import CONTEXT_PARAMETERS, inspect_analytic
from doreisa.errors import AnalyticsError

HELPER = "doreisa_test_helper_analytics"


@pytest.fixture
def helper_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable module ``doreisa_test_helper_analytics`` for ``module:function`` references."""
    (tmp_path / f"{HELPER}.py").write_text(
        textwrap.dedent(
            """
            from doreisa.analytics import Registry

            registry = Registry()

            def plain(x, *, scale=1.0):
                return x * scale

            @registry.analytic("registered_twice_named", window=3)
            def registered(x, y, *, steps):
                return x

            def bad(*arrays):
                return arrays

            not_callable = 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield HELPER
    sys.modules.pop(HELPER, None)


# --- the decorator


def test_bare_decorator_uses_the_function_name() -> None:
    registry = Registry()

    @registry.analytic
    def spread(x, *, bins: int = 3):
        return x

    assert "spread" in registry
    entry = registry.get("spread")
    assert entry == Analytic("spread", spread, ("x",), 1, frozenset(), {"bins": True})


def test_empty_call_uses_the_function_name() -> None:
    registry = Registry()

    @registry.analytic()
    def spread(x):
        return x

    assert list(registry) == ["spread"]


def test_named_decorator_with_window() -> None:
    registry = Registry()

    @registry.analytic("rate", window=2)
    def rate(x, *, steps, times):
        return x

    entry = registry.get("rate")
    assert entry.name == "rate"
    assert entry.window == 2
    assert entry.context == {"steps", "times"}
    assert entry.inputs == ("x",)


def test_decorator_returns_the_function_unchanged() -> None:
    registry = Registry()

    def f(x):
        return x + 1

    assert registry.analytic(f) is f
    assert registry.analytic("g", window=2)(f) is f
    assert f(1) == 2


def test_signature_is_described() -> None:
    def f(a, b, /, c, *, step, time, steps, times, feedback, label, output, bins, lo=0.0):
        return a

    entry = inspect_analytic(f, "f", 4)
    assert entry.inputs == ("a", "b", "c")
    assert entry.context == frozenset(CONTEXT_PARAMETERS)
    assert entry.options == {"bins": False, "lo": True}
    assert entry.window == 4


def test_duplicate_name_names_the_first_function() -> None:
    registry = Registry()

    @registry.analytic("stat")
    def first(x):
        return x

    def second(x):
        return x

    with pytest.raises(AnalyticsError, match=r"'stat' is already registered by .*first; choose another name"):
        registry.analytic("stat")(second)
    assert registry.get("stat").fn is first


def test_duplicate_builtin_name_on_the_default_registry() -> None:
    with pytest.raises(AnalyticsError, match=r"'mean' is already registered by mean"):

        @analytic("mean")
        def my_mean(x):
            return x


@pytest.mark.parametrize(
    "fn",
    [
        lambda *arrays: arrays,
        lambda x, **options: x,
        lambda x, *rest, bins=1: x,
    ],
    ids=["*args", "**kwargs", "*args-then-kw"],
)
def test_var_parameters_are_rejected(fn) -> None:
    with pytest.raises(AnalyticsError, match=r"takes \*.*list its parameters explicitly"):
        Registry().analytic("f")(fn)


def test_no_positional_parameter_is_rejected() -> None:
    def f(*, bins=1):
        return bins

    with pytest.raises(AnalyticsError, match=r"'f' .* has no positional parameter; it needs one per array it reads"):
        Registry().analytic(f)


@pytest.mark.parametrize("window", [0, -1, True, 1.5])
def test_bad_window(window: object) -> None:
    def f(x):
        return x

    with pytest.raises(AnalyticsError, match="window must be a positive integer"):
        Registry().analytic("f", window=window)(f)  # type: ignore[arg-type]


def test_rejected_function_is_not_registered() -> None:
    registry = Registry()
    with pytest.raises(AnalyticsError):
        registry.analytic("f")(lambda *a: a)
    assert "f" not in registry
    assert len(registry) == 0


def test_not_callable() -> None:
    with pytest.raises(AnalyticsError, match="is not callable"):
        inspect_analytic(42, "n", 1)  # type: ignore[arg-type]


# --- lookup


def test_registry_iterates_sorted_names() -> None:
    registry = Registry()
    for name in ("b", "a", "c"):
        registry.analytic(name)(lambda x: x)
    assert list(registry) == ["a", "b", "c"]
    assert len(registry) == 3
    assert "a" in registry
    assert "z" not in registry


def test_unknown_name_lists_the_known_names() -> None:
    registry = Registry()
    registry.analytic("alpha")(lambda x: x)
    registry.analytic("beta")(lambda x: x)
    with pytest.raises(AnalyticsError, match=r"'gamma' is not registered; known: \['alpha', 'beta'\]") as info:
        registry.get("gamma")
    assert "@doreisa.analytic('gamma')" in str(info.value)
    assert "'module:function'" in str(info.value)


def test_module_function_lookup(helper_module: str) -> None:
    registry = Registry()
    entry = registry.get(f"{helper_module}:plain")
    assert entry.name == f"{helper_module}:plain"
    assert entry.inputs == ("x",)
    assert entry.options == {"scale": True}
    assert entry.window == 1
    assert entry.fn(2, scale=3) == 6
    assert f"{helper_module}:plain" not in registry  # looked up, not registered


def test_module_function_reuses_a_registered_entry(helper_module: str) -> None:
    module = __import__(helper_module)
    entry = module.registry.get(f"{helper_module}:registered")
    assert entry.name == "registered_twice_named"
    assert entry.window == 3
    assert entry.inputs == ("x", "y")


def test_module_function_signature_is_checked(helper_module: str) -> None:
    with pytest.raises(AnalyticsError, match=r"takes \*arrays"):
        Registry().get(f"{helper_module}:bad")
    with pytest.raises(AnalyticsError, match="is not callable"):
        Registry().get(f"{helper_module}:not_callable")


def test_module_function_missing_attribute(helper_module: str) -> None:
    with pytest.raises(AnalyticsError, match=f"module '{helper_module}' has no attribute 'nope'"):
        Registry().get(f"{helper_module}:nope")


def test_module_function_missing_module() -> None:
    with pytest.raises(AnalyticsError, match="cannot import 'no_such_module_for_doreisa'"):
        Registry().get("no_such_module_for_doreisa:f")


def test_module_function_module_that_fails_on_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "doreisa_test_broken_module.py").write_text("raise RuntimeError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AnalyticsError, match="cannot import 'doreisa_test_broken_module': RuntimeError: broken on pur"):
        Registry().get("doreisa_test_broken_module:f")
    sys.modules.pop("doreisa_test_broken_module", None)


def test_default_registry_has_the_builtins() -> None:
    assert set(default_registry) >= {"mean", "min", "max", "sum", "std", "histogram", "time_derivative"}
    assert default_registry.get("time_derivative").window == 2
    assert default_registry.get("histogram").options == {"bins": True, "lo": True, "hi": True}


def test_public_decorator_is_the_default_registry() -> None:
    assert doreisa.analytic == default_registry.analytic
    assert doreisa.Registry is Registry

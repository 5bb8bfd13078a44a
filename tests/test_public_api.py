"""The public API is ``doreisa.__all__``; adding or removing a name is a visible diff here."""

from __future__ import annotations

import doreisa
import doreisa.contract
import doreisa.errors

PUBLIC = [
    "AnalyticsError",
    "BlockMismatchError",
    "Bridge",
    "BridgeError",
    "ClusterError",
    "Contract",
    "ContractError",
    "DeviceUnavailableError",
    "DoreisaError",
    "ExpressionError",
    "LayoutError",
    "OutputError",
    "ProtocolError",
    "Registry",
    "RuntimeUnavailableError",
    "StallError",
    "__version__",
    "analytic",
    "load_contract",
    "open_run",
    "register_preprocessor",
    "register_sink",
]


def test_all_is_pinned() -> None:
    assert sorted(doreisa.__all__) == PUBLIC
    assert len(set(doreisa.__all__)) == len(doreisa.__all__)


def test_every_eager_name_resolves() -> None:
    lazy = {"Bridge", "Registry", "analytic", "open_run"}  # loaded on first use; see test_layers.py
    for name in set(doreisa.__all__) - lazy:
        assert getattr(doreisa, name) is not None


def test_lazy_names_resolve() -> None:
    from doreisa.analytics import Registry, analytic
    from doreisa.report import open_run

    assert doreisa.Registry is Registry
    assert doreisa.analytic == analytic
    assert doreisa.open_run is open_run


def test_unknown_attribute() -> None:
    try:
        doreisa.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "module 'doreisa' has no attribute 'no_such_name'" in str(exc)
    else:
        raise AssertionError("doreisa.no_such_name did not raise")


def test_version() -> None:
    assert doreisa.__version__ == "0.4.0.dev0"


def test_errors_module_exports_the_tree() -> None:
    errors = [name for name in doreisa.errors.__all__ if name.endswith("Error")]
    assert sorted(errors) == sorted(name for name in PUBLIC if name.endswith("Error"))
    for name in errors:
        assert issubclass(getattr(doreisa.errors, name), doreisa.DoreisaError)
    assert set(doreisa.errors.__all__) - set(errors) == {"StoreWarning"}
    assert issubclass(doreisa.errors.StoreWarning, UserWarning), "warnings filters take it"
    assert issubclass(doreisa.ContractError, ValueError)
    assert issubclass(doreisa.ExpressionError, doreisa.ContractError)
    assert issubclass(doreisa.BridgeError, RuntimeError)


def test_contract_package_exports() -> None:
    assert sorted(doreisa.contract.__all__) == [
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


def test_analytics_package_exports() -> None:
    import doreisa.analytics
    from doreisa.analytics.registry import CONTEXT_PARAMETERS

    assert sorted(doreisa.analytics.__all__) == [
        "Analytic",
        "BoundAnalytic",
        "Feedback",
        "Registry",
        "analytic",
        "bind_analytics",
        "default_registry",
        "windows_needed",
    ]
    assert CONTEXT_PARAMETERS == ("step", "time", "steps", "times", "feedback", "label", "output")

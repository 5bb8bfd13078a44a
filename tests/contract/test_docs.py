"""docs/contract.md stays in sync with the contract models."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from doreisa.analytics import default_registry
from doreisa.analytics.registry import CONTEXT_PARAMETERS
from doreisa.contract import ArraySpec, Contract, parse_contract
from doreisa.contract.expressions import CONSTANTS, REDUCTIONS, SCALAR_FUNCTIONS, VARIABLES
from doreisa.contract.models import DTYPES
from doreisa.plugins import PREPROCESSORS, SINKS

DOC = Path(__file__).resolve().parents[2] / "docs" / "contract.md"
TEXT = DOC.read_text(encoding="utf-8")
BACKTICKED = set(re.findall(r"`([^`\n]+)`", TEXT))


def _inner(annotation: object) -> list[object]:
    """``annotation`` and every type nested in it (unions, containers, Annotated)."""
    found = [annotation]
    for arg in typing.get_args(annotation):
        found.extend(_inner(arg))
    return found


def _models(model: type[BaseModel], seen: dict[str, type[BaseModel]] | None = None) -> dict[str, type[BaseModel]]:
    seen = {} if seen is None else seen
    seen[model.__name__] = model
    for field in model.model_fields.values():
        for inner in _inner(field.annotation):
            if isinstance(inner, type) and issubclass(inner, BaseModel) and inner.__name__ not in seen:
                _models(inner, seen)
    return seen


MODELS = _models(Contract)
FIELDS = sorted({(model, name) for model, cls in MODELS.items() for name in cls.model_fields})


def _literals() -> set[str]:
    values: set[str] = set()
    for cls in MODELS.values():
        for field in cls.model_fields.values():
            for inner in _inner(field.annotation):
                if typing.get_origin(inner) is typing.Literal:
                    values.update(str(v) for v in typing.get_args(inner))
    return values


def test_every_model_is_found() -> None:
    assert set(MODELS) == {
        "Contract",
        "ArraySpec",
        "Slice",
        "Preprocess",
        "Cadence",
        "Placement",
        "Trigger",
        "TriggerAction",
        "AnalyticSpec",
        "Backpressure",
        "Handover",
        "Timeouts",
        "Outputs",
        "Monitor",
        "FeedbackPolicy",
    }


@pytest.mark.parametrize(("model", "name"), FIELDS, ids=[f"{m}.{n}" for m, n in FIELDS])
def test_every_field_is_documented(model: str, name: str) -> None:
    assert name in BACKTICKED, f"docs/contract.md does not mention `{name}` ({model}.{name}); document it"


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_is_listed(dtype: str) -> None:
    assert dtype in BACKTICKED, f"docs/contract.md does not list the dtype `{dtype}`"


def test_every_literal_value_is_documented() -> None:
    missing = sorted(v for v in _literals() if v not in BACKTICKED)
    assert not missing, f"docs/contract.md does not mention the valid values {missing}"


def test_expression_words_are_documented() -> None:
    words = [*VARIABLES, *CONSTANTS, *(f"{r}(a)" for r in REDUCTIONS), *(f"{f}(x)" for f in SCALAR_FUNCTIONS)]
    missing = [w for w in words if w not in BACKTICKED]
    assert not missing, f"docs/contract.md does not document {missing} in the expression language"


def test_builtin_analytics_are_documented() -> None:
    missing = [name for name in default_registry if name not in BACKTICKED]
    assert not missing, f"docs/contract.md does not document the built-in analytics {missing}"
    for name in CONTEXT_PARAMETERS:
        assert name in BACKTICKED, f"docs/contract.md does not document the context parameter `{name}`"


def test_builtin_preprocesses_are_documented() -> None:
    for name in PREPROCESSORS:
        assert name in BACKTICKED, f"docs/contract.md does not document the preprocess `{name}`"
        for param in PREPROCESSORS.get(name).params:
            assert param in BACKTICKED, f"docs/contract.md does not document `{param}` of the preprocess {name}"
    assert "module:function" in BACKTICKED


def test_builtin_sinks_are_documented() -> None:
    for name in SINKS:
        assert name in BACKTICKED, f"docs/contract.md does not document the output format `{name}`"


SNIPPETS = re.findall(r"```yaml\n(.*?)```", TEXT, flags=re.S)
ARRAY = {"dtype": "float64", "shape": [256, 256], "block": [128, 128], "dims": ["y", "x"]}


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_yaml_snippets_are_valid(snippet: str) -> None:
    loaded = yaml.safe_load(snippet)
    if loaded is None:  # a comment only
        return
    assert isinstance(loaded, dict)
    if "arrays" in loaded:
        parse_contract(snippet)
    elif set(loaded) <= set(Contract.model_fields):  # a section: valid beside an array
        Contract.model_validate({"arrays": {"temperature": ARRAY}, **loaded})
    else:  # keys of one array
        assert set(loaded) <= set(ArraySpec.model_fields)
        ArraySpec.model_validate({**ARRAY, **loaded})

"""The committed JSON Schema matches the models, and ``doreisa schema`` prints it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from doreisa.cli import main
from doreisa.contract.schema import contract_json_schema, contract_json_schema_text, keys_at, user_loc

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "contract.schema.json"
EXAMPLES = sorted({*ROOT.glob("examples/contracts/*.yaml"), *ROOT.glob("examples/**/contract*.yaml")})


def test_committed_schema_is_up_to_date() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == contract_json_schema_text(), (
        "docs/contract.schema.json is out of date with doreisa/contract/models.py; regenerate it with "
        "`doreisa schema > docs/contract.schema.json`"
    )


def test_cli_schema_prints_valid_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    schema = json.loads(out)
    assert "arrays" in schema["properties"]
    assert schema["required"] == ["arrays"]
    assert schema["additionalProperties"] is False
    assert schema["title"] == "doreisa contract"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_admits_the_shorthands() -> None:
    array = contract_json_schema()["$defs"]["ArraySpec"]["properties"]
    assert {"type": "string"} in array["preprocess"]["anyOf"]
    assert any(member.get("type") == "object" for member in array["select"]["anyOf"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_are_valid_against_the_schema(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), contract_json_schema())


def test_schema_rejects_a_typo() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    with pytest.raises(jsonschema.ValidationError, match="windw"):
        jsonschema.validate({"arrays": {"t": {"dtype": "float64", "shape": [4], "windw": 2}}}, contract_json_schema())


@pytest.mark.parametrize(
    ("loc", "keys"),
    [
        (
            (),
            [
                "version",
                "arrays",
                "cadence",
                "triggers",
                "monitors",
                "feedback",
                "analytics",
                "placement",
                "backpressure",
                "handover",
                "timeouts",
                "outputs",
            ],
        ),
        (
            ("arrays", "t"),
            [
                "dtype",
                "shape",
                "block",
                "dims",
                "select",
                "preprocess",
                "window",
                "cadence",
                "placement",
                "of",
                "ranks",
                "finite",
            ],
        ),
        (("arrays", "t", "select", 0), ["start", "stop", "step"]),
        (("arrays", "t", "preprocess"), ["function", "params"]),
        (("triggers", 2, "action", "cadence"), ["every", "every_time", "never", "start", "stop"]),
        (("analytics", 0), ["function", "name", "arrays", "window", "params"]),
        (("monitors", 1), ["array", "reductions", "every", "select"]),
        (("monitors", 0, "select", 1), ["start", "stop", "step"]),
        (("feedback",), ["mode", "lag", "sync_every", "enabled"]),
        (("arrays",), []),
        (("arrays", "t", "shape"), []),
        (("nope",), []),
    ],
)
def test_keys_at(loc: tuple[str | int, ...], keys: list[str]) -> None:
    assert keys_at(loc) == keys


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("arrays", "t", "dtype"), ("arrays", "t", "dtype")),
        (("arrays", "int", "dtype"), ("arrays", "int", "dtype")),  # a real key named like a tag
        (("analytics", 0, "arrays", "tuple[constrained-str, ...]", 1), ("analytics", 0, "arrays", 1)),
        (("analytics", 0, "params", "bins", "str"), ("analytics", 0, "params", "bins")),
        (("analytics", 0, "params", "str", "list[union[str,int,float,bool]]", 0), ("analytics", 0, "params", "str", 0)),
        (("arrays", "t", "function-after[_consistent(), ArraySpec]", "shape"), ("arrays", "t", "shape")),
        (("arrays", "bad key", "[key]"), ("arrays", "bad key")),
    ],
)
def test_user_loc(loc: tuple[str | int, ...], expected: tuple[str | int, ...]) -> None:
    assert user_loc(loc) == expected


def test_schema_has_an_id_and_a_draft() -> None:
    schema = contract_json_schema()
    assert (schema["$id"], schema["$schema"]) == (
        "urn:doreisa:contract:1",
        "https://json-schema.org/draft/2020-12/schema",
    )

"""JSON Schema of the contract, and introspection used in error messages."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from doreisa.contract.document import Contract


def contract_json_schema() -> dict[str, Any]:
    """The JSON Schema of a contract file, for editors and CI."""
    schema = Contract.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "urn:doreisa:contract:1"  # version 1 of the contract (its `version` key)
    schema["title"] = "doreisa contract"
    array = schema["$defs"]["ArraySpec"]
    # a view (`of:`) takes dtype and shape from the array it views (Contract fills them in before validation)
    array["anyOf"] = [{"required": array.pop("required")}, {"required": ["of"]}]
    return schema


def contract_json_schema_text() -> str:
    """:func:`contract_json_schema` as the text committed in ``docs/contract.schema.json``."""
    return json.dumps(contract_json_schema(), indent=2, sort_keys=True) + "\n"


def keys_at(loc: tuple[str | int, ...]) -> list[str]:
    """The valid keys of the mapping at ``loc`` in a contract, or ``[]`` if it is not a model."""
    model = _model_at(Contract, loc)
    return list(model.model_fields) if model is not None else []


def user_loc(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """A pydantic error location as the user's key path, without the tags pydantic inserts.

    pydantic names union members and validators in locations (``'tuple[str, ...]'``,
    ``'function-after[...]'``, ``'int'``); they are dropped unless the contract really has a key
    of that name there (an array called ``int`` stays).
    """
    out: list[str | int] = []
    annotation: Any = Contract
    for part in loc:
        following = _step(annotation, part)
        if following is None and isinstance(part, str) and ("[" in part or part in _UNION_TAGS):
            continue
        out.append(part)
        annotation = following
    return tuple(out)


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "tuple"})


def _model_at(annotation: Any, loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return None
    return _as_model(annotation)


def _step(annotation: Any, part: str | int) -> Any:
    if isinstance(part, str) and "[" in part:
        return None  # a tag such as 'tuple[str, ...]', never a key: keys are identifiers
    for candidate in _members(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            if isinstance(part, str) and part in candidate.model_fields:
                return candidate.model_fields[part].annotation
            continue
        origin = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if origin is dict and isinstance(part, str):
            return args[1]
        if origin in (tuple, list) and isinstance(part, int) and args:
            return args[0]
    return None


def _members(annotation: Any) -> list[Any]:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _as_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in _members(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None

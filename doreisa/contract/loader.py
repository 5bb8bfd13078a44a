"""YAML file -> :class:`Contract`, with errors that name the file, line, column and key.

The text is read twice: :func:`yaml.compose` builds the node tree (which knows where every
key is and lets us reject duplicate keys), and :func:`yaml.safe_load` builds the data. No
other YAML loader is ever used, so tags such as ``!!python/object/apply`` are refused.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from doreisa.contract.models import Contract
from doreisa.errors import ContractError

Loc = tuple[str | int, ...]
Marks = dict[Loc, tuple[int, int]]

MAX_FILE_BYTES = 4 * 1024 * 1024


def load_contract(path: str | os.PathLike[str]) -> Contract:
    """Read, parse and validate a contract file.

    Parameters
    ----------
    path : path-like
        The YAML contract.

    Returns
    -------
    Contract

    Raises
    ------
    ContractError
        For an unreadable file, bad YAML or an invalid contract. The message starts with
        ``file:line:column`` and names the key path and what is valid.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ContractError(f"{path}: {size} bytes is too large for a contract (limit {MAX_FILE_BYTES})")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError(f"{path}: cannot read the contract: {exc}") from exc
    return parse_contract(text, source=str(path))


def parse_contract(text: str, *, source: str = "<contract>") -> Contract:
    """Parse and validate contract text; ``source`` names it in errors (see :func:`load_contract`)."""
    marks, data = _load_yaml(text, source)
    if data is None:
        raise ContractError(f"{source}:1:1: the contract is empty; it must declare at least 'arrays:'")
    if not isinstance(data, dict):
        raise ContractError(
            f"{source}:1:1: the top level must be a mapping of sections (arrays, cadence, ...), "
            f"got a {type(data).__name__}"
        )
    try:
        return Contract.model_validate(data)
    except ValidationError as exc:
        raise ContractError(format_validation_error(exc, marks, source)) from None


def _load_yaml(text: str, source: str) -> tuple[Marks, Any]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        marks: Marks = {}
        if node is not None:
            _walk(node, (), marks, source)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise ContractError(_yaml_message(exc, source)) from None
    except yaml.YAMLError as exc:
        raise ContractError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ContractError(f"{source}: the YAML is nested too deeply") from None
    return marks, data


def _yaml_message(exc: yaml.MarkedYAMLError, source: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    problem = exc.problem or exc.context or "invalid YAML"
    hint = ""
    if "\t" in problem or "'\\t'" in problem:
        hint = " (YAML does not allow tabs for indentation: use spaces)"
    elif "tag" in problem:
        hint = " (contracts are plain data: tags such as !!python/... are never executed or allowed)"
    return f"{where}: not valid YAML: {problem}{hint}"


def _walk(node: yaml.Node, loc: Loc, marks: Marks, source: str) -> None:
    marks[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ContractError(
                    f"{source}:{line}:{key_node.start_mark.column + 1}: {_dotted((*loc, key))}: duplicate key "
                    f"(first given on line {seen[key]}); keep one"
                )
            seen[key] = line
            marks[(*loc, key)] = (line, key_node.start_mark.column + 1)
            _walk_value(value_node, (*loc, key), marks, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*loc, i), marks, source)


def _walk_value(node: yaml.Node, loc: Loc, marks: Marks, source: str) -> None:
    key_mark = marks[loc]
    _walk(node, loc, marks, source)
    if not isinstance(node, yaml.ScalarNode):
        marks[loc] = key_mark  # point at the key, not at the first child


def format_validation_error(exc: ValidationError, marks: Marks, source: str) -> str:
    """One line per pydantic error: ``file:line:col: key.path: message``."""
    lines = [f"{source}: invalid contract ({exc.error_count()} error{'s' if exc.error_count() > 1 else ''})"]
    for err in exc.errors(include_url=False):
        loc = _user_loc(err["loc"])
        line, col = _nearest_mark(loc, marks)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}{_valid_keys(loc)}"
        elif err["type"] == "missing":
            message = "required key is missing"
        lines.append(f"  {source}:{line}:{col}: {_dotted(loc) or '(top level)'}: {message}")
    return "\n".join(lines)


def _user_loc(loc: Sequence[str | int]) -> Loc:
    # pydantic adds union-member and validator names ("tuple[...]", "function-after[...]") to locations
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS)))


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "tuple"})


def _nearest_mark(loc: Loc, marks: Marks) -> tuple[int, int]:
    for end in range(len(loc), -1, -1):
        if loc[:end] in marks:
            return marks[loc[:end]]
    return 1, 1


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _valid_keys(loc: Loc) -> str:
    from doreisa.contract.schema import keys_at

    keys = keys_at(loc[:-1])
    if not keys:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; valid keys here: {', '.join(keys)}"

"""YAML file -> :class:`Contract`, with errors that name the file, line, column and key.

A safe YAML loader (libyaml's ``CSafeLoader`` when installed, else ``SafeLoader``) first
builds the node tree, which knows where every key is. The tree is checked (duplicate keys,
tags other than plain data, alias bombs) and only then turned into data by the same safe
loader, so tags such as ``!!python/object/apply`` are refused, never executed.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import ValidationError

from doreisa.contract.document import Contract
from doreisa.contract.models import LocatedError, LocatedErrors
from doreisa.contract.schema import keys_at, user_loc
from doreisa.errors import ContractError

Loc = tuple[str | int, ...]
Marks = dict[Loc, tuple[int, int]]

MAX_FILE_BYTES = 4 * 1024 * 1024
# libyaml parses a large file a hundred times faster than the pure-Python loader.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
    marks: Marks = {}
    loader = _SafeLoader(text)
    try:
        node = cast("yaml.Node | None", loader.get_single_node())
        if node is None:
            return marks, None
        _Walker(source, marks).walk(node, ())
        return marks, _construct(loader, node, source)
    except yaml.MarkedYAMLError as exc:
        raise ContractError(_yaml_message(exc, source, text)) from None
    except yaml.YAMLError as exc:
        raise ContractError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ContractError(f"{source}: the YAML is nested too deeply, or an alias contains itself") from None
    finally:
        loader.dispose()


def _construct(loader: Any, node: yaml.Node, source: str) -> Any:
    try:
        return loader.construct_document(node)
    except (yaml.YAMLError, RecursionError):
        raise
    except Exception as exc:  # PyYAML raises ValueError, KeyError, ... for explicit `!!int abc`, `!!bool maybe`
        raise ContractError(
            f"{source}: a value cannot be read ({type(exc).__name__}: {exc}); write plain values, without !! tags"
        ) from None


def _yaml_message(exc: yaml.MarkedYAMLError, source: str, text: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return f"{source}: not valid YAML: {exc}"
    problem = exc.problem or exc.context or "invalid YAML"
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    hint = " (YAML does not allow tabs for indentation: use spaces)" if "\t" in line else ""
    return f"{source}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {problem}{hint}"


# Plain data only; timestamps, binary, sets and ordered maps have no place in a contract.
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{kind}" for kind in ("str", "int", "float", "bool", "null", "map", "seq", "merge")
)
# Aliases make the node graph a DAG: a few hundred bytes can stand for billions of nodes.
MAX_NODES = 100_000


class _Walker:
    """Records the line and column of every key path; rejects duplicate keys, tags and alias bombs."""

    def __init__(self, source: str, marks: Marks) -> None:
        self.source = source
        self.marks = marks
        self.count = 0

    def walk(self, node: yaml.Node, loc: Loc) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            raise ContractError(
                f"{self.source}: the YAML expands to more than {MAX_NODES} values (through aliases?); "
                "a contract is small: write it out without '*alias' references to large blocks"
            )
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        if node.tag not in _PLAIN_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!", 1)
            raise ContractError(
                f"{self.source}:{line}:{col}: {_dotted(loc) or '(top level)'}: the tag {tag!r} is not allowed; "
                "contracts are plain data (strings, numbers, booleans, null, lists, mappings; quote a value "
                "to make it a string): tags such as !!python/... are never executed"
            )
        self.marks[loc] = (line, col)
        if isinstance(node, yaml.MappingNode):
            self._mapping(node, loc)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(cast("list[yaml.Node]", node.value)):
                self.walk(item, (*loc, i))

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> None:
        seen: dict[object, int] = {}
        for key_node, value_node in cast("list[tuple[yaml.Node, yaml.Node]]", node.value):
            key = cast(str, key_node.value) if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key in seen:
                raise ContractError(
                    f"{self.source}:{line}:{col}: {_dotted((*loc, key))}: duplicate key "
                    f"(first given on line {seen[key]}); keep one"
                )
            seen[key] = line
            self.walk(value_node, (*loc, key))
            self.marks[(*loc, key)] = (line, col)  # errors point at the key, not at its value


def format_validation_error(exc: ValidationError, marks: Marks, source: str) -> str:
    """One line per pydantic error: ``file:line:col: key.path: message``."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = user_loc(err["loc"])
        message = err["msg"].removeprefix("Value error, ").replace("a valid tuple", "a list")
        cause = err.get("ctx", {}).get("error")
        located = (
            cause.errors if isinstance(cause, LocatedErrors) else [cause] if isinstance(cause, LocatedError) else []
        )
        for one in located:  # a check across fields: each failure at its own key
            lines.append(_line(source, (*loc, *one.loc), one.message, marks))
        if located:
            continue
        if err["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}{_valid_keys(loc)}"
        elif err["type"] == "missing":
            message = f"required key {loc[-1]!r} is missing"
        lines.append(_line(source, loc, message, marks))
    count = len(lines)
    return "\n".join([f"{source}: invalid contract ({count} error{'s' if count > 1 else ''})", *lines])


def _line(source: str, loc: Loc, message: str, marks: Marks) -> str:
    line, col = _nearest_mark(loc, marks)
    return f"  {source}:{line}:{col}: {_dotted(loc) or '(top level)'}: {message}"


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
    keys = keys_at(loc[:-1])
    if not keys:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; valid keys here: {', '.join(keys)}"

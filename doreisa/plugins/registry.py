"""A registry of named plugins of one kind: names checked when registered, looked up by the contract."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Generic, TypeVar

from doreisa.errors import DoreisaError

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PluginRegistry(Generic[T]):
    """Plugins of one ``kind`` by name, in registration order (the built-ins first).

    A duplicate name is an error naming what holds it (xarray only warns): two plugins of one
    name would make a contract mean different things depending on import order.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        """Register ``entry`` under ``name``.

        Raises
        ------
        DoreisaError
            For a name that is not an identifier, or that is already registered.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise DoreisaError(f"{self.kind} name {name!r} must be an identifier (letters, digits, _)")
        if name in self._entries:
            raise DoreisaError(
                f"{self.kind} {name!r} is already registered ({self._entries[name]!r}); choose another name, or "
                f"remove the first with unregister({name!r})"
            )
        self._entries[name] = entry

    def unregister(self, name: str) -> T:
        """Remove ``name`` (tests, notebooks that re-run a cell); returns its entry."""
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The entry of ``name``.

        Raises
        ------
        KeyError
            Naming the registered plugins of this kind.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no {self.kind} {name!r}; registered: {', '.join(self._entries)}") from None

    def names(self) -> list[str]:
        """Registered names, the built-ins first."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

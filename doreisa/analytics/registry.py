"""Registration of analytics: ``@doreisa.analytic``.

Everything is checked when the decorator runs (import time): a duplicate name, ``*args`` or
``**kwargs``, no array parameter. The decorator returns the function unchanged.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

from doreisa.errors import AnalyticsError

F = TypeVar("F", bound=Callable[..., Any])

#: Keyword-only parameters the runtime fills in when an analytic asks for them.
#: Whether an analytic receives ``xarray.DataArray`` objects (see :class:`Analytic`).
Named = bool | Literal["auto"]

CONTEXT_PARAMETERS = ("step", "time", "steps", "times", "feedback", "label", "output")


@dataclass(frozen=True)
class Analytic:
    """A registered analytic.

    Attributes
    ----------
    name : str
        Registered name, used by ``analytics[].function`` in the contract.
    fn : callable
        The user's function.
    inputs : tuple of str
        Its positional parameters: one array (or window of arrays) each.
    window : int
        Steps per call unless the contract says otherwise; >1 passes lists, oldest first.
    context : frozenset of str
        Which of ``step, time, steps, times`` it accepts.
    options : dict
        Other keyword-only parameters, filled from the contract's ``params``; value: has a default.
    named : bool or "auto"
        Receives ``xarray.DataArray`` objects with the contract's ``dims`` (and the selected
        region's global indices as coordinates) instead of bare Dask arrays; ``"auto"``: for
        the arrays whose ``dims`` the contract gives (the others stay Dask arrays).
    """

    name: str
    fn: Callable[..., Any]
    inputs: tuple[str, ...]
    window: int = 1
    context: frozenset[str] = frozenset()
    options: dict[str, bool] = field(default_factory=dict[str, bool])
    named: Named = False


def inspect_analytic(fn: Callable[..., Any], name: str, window: int, named: Named = False) -> Analytic:
    """Check ``fn``'s signature and describe it as an :class:`Analytic`."""
    if not callable(fn):
        raise AnalyticsError(f"analytic {name!r}: {fn!r} is not callable")
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise AnalyticsError(f"analytic {name!r}: window must be a positive integer, got {window!r}")
    inputs: list[str] = []
    context: set[str] = set()
    options: dict[str, bool] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise AnalyticsError(
                f"analytic {name!r} ({fn.__qualname__}) takes *{param.name}; list its parameters explicitly: "
                "arrays as positional parameters, then keyword-only step/time/steps/times or options"
            )
        if param.kind == param.KEYWORD_ONLY:
            if param.name in CONTEXT_PARAMETERS:
                context.add(param.name)
            else:
                options[param.name] = param.default is not param.empty
        else:
            inputs.append(param.name)
    if not inputs:
        raise AnalyticsError(
            f"analytic {name!r} ({fn.__qualname__}) has no positional parameter; it needs one per array it reads"
        )
    return Analytic(name, fn, tuple(inputs), window, frozenset(context), options, named)


class Registry:
    """A set of analytics by name. The runtime receives one; tests can make their own."""

    def __init__(self) -> None:
        self._entries: dict[str, Analytic] = {}

    @overload
    def analytic(self, name: F, /) -> F: ...
    @overload
    def analytic(self, name: str | None = None, /, *, window: int = 1, named: Named = False) -> Callable[[F], F]: ...

    def analytic(
        self, name: str | F | None = None, /, *, window: int = 1, named: Named = False
    ) -> F | Callable[[F], F]:
        """Register a function as an analytic (``@analytic`` or ``@analytic("name", window=2)``).

        Parameters
        ----------
        name : str, optional
            Registered name; default: the function's ``__name__``.
        window : int
            Steps per call; with more than 1 each array parameter receives a list, oldest first.
        named : bool or "auto"
            Pass ``xarray.DataArray`` objects with the contract's ``dims`` and region coordinates
            (True: every array must have ``dims``; "auto": those that have them).

        Raises
        ------
        AnalyticsError
            For a duplicate name or an unusable signature.
        """
        if callable(name):
            return self.analytic(None)(name)

        def decorator(fn: F) -> F:
            key = name if isinstance(name, str) else fn.__name__
            if key in self._entries:
                raise AnalyticsError(
                    f"analytic name {key!r} is already registered by {self._entries[key].fn.__qualname__}; "
                    "choose another name"
                )
            self._entries[key] = inspect_analytic(fn, key, window, named)
            return fn

        return decorator

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, reference: str) -> Analytic:
        """Look up a registered name, or import ``module:function``.

        Raises
        ------
        AnalyticsError
            If the name is unknown or the import fails.
        """
        if reference in self._entries:
            return self._entries[reference]
        if ":" not in reference:
            raise AnalyticsError(
                f"analytic {reference!r} is not registered; known: {sorted(self._entries)}. Decorate it with "
                f"@doreisa.analytic({reference!r}), import the module that defines it, or write 'module:function'"
            )
        module_name, _, attr = reference.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # user code: a failing import is reported like any binding problem
            raise AnalyticsError(
                f"analytic {reference!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        fn = getattr(module, attr, None)
        if fn is None:
            raise AnalyticsError(f"analytic {reference!r}: module {module_name!r} has no attribute {attr!r}")
        for entry in self._entries.values():
            if entry.fn is fn:
                return entry
        return inspect_analytic(fn, reference, 1)


default_registry = Registry()
analytic = default_registry.analytic

"""Output sinks: where ``doreisa run`` writes every recorded result (``outputs.formats``).

Two kinds. A *store* sink keeps values (``npy``: one file per array result; ``zarr`` and
``netcdf``, in :mod:`doreisa.plugins.stores`: one dataset per analytic) and says where it put
each one; a *table* sink writes one row per result (``csv``: ``results.csv``; ``parquet``),
scalars inline and arrays by where the stores put them. The run calls every store sink of the
contract's formats first, then every table sink, with the same :class:`Result`.

Register your own with :func:`register_sink`: a class (or function) taking the output folder
and returning a :class:`Sink`.
"""

from __future__ import annotations

import csv
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import numpy as np

from doreisa.plugins.registry import PluginRegistry

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Result:
    """One recorded result: an analytic's value (or a monitor's) at one step.

    ``value`` is what the analytic returned once computed: a numpy scalar or array, a Python
    number, or an ``xarray.DataArray`` (dims and coordinates kept). ``stored``: where the store
    sinks put it, as paths relative to the output folder (given to table sinks).
    """

    analytic: str
    step: int
    time: float | None
    value: Any
    stored: tuple[str, ...] = ()


class Sink(Protocol):
    """An output format: receives every recorded result of a run, in order, then ``close()``."""

    def record(self, result: Result, /) -> str | None:
        """Write ``result``; a store returns where it put the value (relative to the output folder), if it did."""
        ...

    def close(self) -> None:
        """Flush and close; called once, at the end of the run (also a failed one)."""
        ...


@dataclass(frozen=True)
class SinkEntry:
    """A registered sink: what builds it from the output folder, whether it is a table, and the
    Python packages it needs (``requires``) with the ``pip`` extra that brings them."""

    factory: Callable[[Path], Sink]
    table: bool
    requires: tuple[str, ...] = ()
    extra: str | None = None

    def missing(self) -> str | None:
        """What to install for this sink to work (checked when the contract loads); None: nothing."""
        absent = [module for module in self.requires if importlib.util.find_spec(module) is None]
        if not absent:
            return None
        how = f"pip install 'doreisa[{self.extra}]'" if self.extra else f"pip install {' '.join(absent)}"
        return f"it needs the Python package{'s' if len(absent) > 1 else ''} {', '.join(absent)}: {how}"

    def __repr__(self) -> str:
        return f"{getattr(self.factory, '__module__', '?')}.{getattr(self.factory, '__qualname__', self.factory)}"


SINKS: PluginRegistry[SinkEntry] = PluginRegistry("output format")


def register_sink(
    name: str, *, table: bool = False, requires: tuple[str, ...] = (), extra: str | None = None
) -> Callable[[F], F]:
    """Register a sink under ``name`` (what ``outputs.formats`` lists); returns it unchanged.

    ``table``: it writes one row per result and receives where the store sinks put each value.
    ``requires``: modules it imports when it runs; a contract naming it while one is missing is
    refused when it loads, with ``pip install 'doreisa[EXTRA]'`` (``extra``) as the fix.

    Raises
    ------
    DoreisaError
        For a duplicate or malformed name.
    """

    def decorator(factory: F) -> F:
        SINKS.add(name, SinkEntry(factory, table, tuple(requires), extra))
        return factory

    return decorator


def scalar_text(value: Any) -> str | None:
    """A scalar result as text (``repr`` of a float: round-trips exactly); None for anything else."""
    if hasattr(value, "dims") and hasattr(value, "values"):  # an xarray result
        value = value.values
    if isinstance(value, bool | int | float | str | np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        item = np.asarray(value).item()
        return repr(float(item)) if isinstance(item, float) else str(item)
    return None


@register_sink("npy")
class NpySink:
    """Array results as ``arrays/<analytic>/step_<step>.npy`` (numpy's own format); scalars are left to tables."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def record(self, result: Result, /) -> str | None:
        if scalar_text(result.value) is not None:
            return None
        folder = self.directory / "arrays" / result.analytic
        folder.mkdir(parents=True, exist_ok=True)
        path = f"arrays/{result.analytic}/step_{result.step:08d}.npy"
        value = result.value.values if hasattr(result.value, "dims") else result.value
        np.save(self.directory / path, np.asarray(value))
        return path

    def close(self) -> None:
        return None


@register_sink("csv", table=True)
class CsvSink:
    """``results.csv``: ``analytic, step, time, value, file`` (scalars inline, arrays where a store put them)."""

    FIELDS = ("analytic", "step", "time", "value", "file")

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = (directory / "results.csv").open("w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(self.FIELDS)

    def record(self, result: Result, /) -> str | None:
        scalar = scalar_text(result.value)
        time = "" if result.time is None else repr(result.time)
        self._writer.writerow(
            (result.analytic, result.step, time, "" if scalar is None else scalar, ";".join(result.stored))
        )
        self._file.flush()  # a run that dies keeps every row recorded so far
        return None

    def close(self) -> None:
        self._file.close()


@register_sink("parquet", table=True, requires=("pyarrow",))
class ParquetSink:
    """``results.parquet``: the columns of ``results.csv``, typed (``value`` is a float, null for an array).

    Rows are written in row groups (every ``ROWS`` rows or ``SECONDS`` seconds); the file is
    complete only once the run has closed it, so ``results.csv`` is the table to read after a
    crash (Parquet writes its index at the end).
    """

    ROWS, SECONDS = 10_000, 10.0

    def __init__(self, directory: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        directory.mkdir(parents=True, exist_ok=True)
        text, number = pa.string(), pa.float64()
        self._schema = pa.schema(
            [("analytic", text), ("step", pa.int64()), ("time", number), ("value", number), ("file", text)]
        )
        self._writer = pq.ParquetWriter(directory / "results.parquet", self._schema)
        self._rows: list[tuple[str, int, float | None, float | None, str]] = []
        self._written = time.monotonic()

    def record(self, result: Result, /) -> str | None:
        self._rows.append(
            (result.analytic, result.step, result.time, scalar_number(result.value), ";".join(result.stored))
        )
        if len(self._rows) >= self.ROWS or time.monotonic() - self._written >= self.SECONDS:
            self._flush()
        return None

    def _flush(self) -> None:
        import pyarrow as pa

        self._written = time.monotonic()
        if self._rows:
            columns = zip(*self._rows, self._schema, strict=True)
            self._rows = []
            arrays = [pa.array(values, type=column.type) for *values, column in columns]
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))

    def close(self) -> None:
        try:
            self._flush()
        finally:
            self._writer.close()


def scalar_number(value: Any) -> float | None:
    """A numeric scalar result as a float; None for anything else (an array, a string)."""
    if hasattr(value, "dims") and hasattr(value, "values"):
        value = value.values
    array = np.asarray(value) if isinstance(value, bool | int | float | np.generic | np.ndarray) else None
    if array is None or array.ndim != 0 or array.dtype.kind not in "biuf":
        return None
    return float(array)

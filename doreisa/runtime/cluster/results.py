"""What a run writes besides its analytics' values: every result through the contract's sinks, and provenance.

:class:`ResultWriter` hands each recorded result to the sinks of ``outputs.formats``
(:mod:`doreisa.plugins.sinks`): the stores first, then the tables, which learn where the stores
put each array. :class:`Provenance` writes ``provenance.jsonl``.
"""

from __future__ import annotations

import collections
import json
import logging
import time as _time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doreisa.errors import OutputError
from doreisa.plugins import SINKS, Result, Sink
from doreisa.plugins.sinks import scalar_text
from doreisa.runtime.protocol import Applied, PlacementChanged, RankStats

log = logging.getLogger("doreisa.results")


class ResultWriter:
    """Records results: through the sinks of ``formats`` into ``directory``, or in memory.

    Parameters
    ----------
    directory : Path or None
        The output folder; None keeps results in memory only (tests, notebooks).
    formats : sequence of str
        Registered sinks (``outputs.formats``).
    keep : bool, optional
        Keep every result in memory (``values``); default: only without a ``directory``.
    """

    def __init__(self, directory: Path | None, formats: Sequence[str] = ("csv", "npy"), *, keep: bool | None = None):
        self.directory = directory
        self.keep = directory is None if keep is None else keep
        #: Results by analytic and step, kept in memory only when asked (a long run writes them out instead).
        self.values: dict[str, dict[int, Any]] = collections.defaultdict(dict)
        self.count = 0
        #: time.monotonic() of the first result (summary.json: first_result_s, from the run's start)
        self.first_at: float | None = None
        self.unsaved = 0  # array results that no store sink of the formats keeps
        #: Per format that failed: how many results it lost, and its first error (the summary lists them).
        self.failures: dict[str, OutputFailure] = {}
        self._stores: list[tuple[str, Sink]] = []
        self._tables: list[tuple[str, Sink]] = []
        if directory is not None:
            for name in formats:
                entry = SINKS.get(name)
                (self._tables if entry.table else self._stores).append((name, entry.factory(directory)))

    def record(self, analytic: str, step: int, time: float | None, value: Any) -> None:
        """Write ``value`` through every sink (or keep it in memory when there is no output folder)."""
        self.count += 1
        if self.first_at is None:
            self.first_at = _time.monotonic()
        if self.keep:
            self.values[analytic][step] = value.values if hasattr(value, "dims") else value  # xarray: its data
        if self.directory is None:
            return
        result = Result(analytic, step, time, value)
        stored = tuple(where for name, sink in self._stores if (where := self._call(name, sink.record, result)))
        if not stored and scalar_text(value) is None:
            self.unsaved += 1
        if self._tables:
            result = Result(analytic, step, time, value, stored)
            for name, sink in self._tables:
                self._call(name, sink.record, result)

    def _call(self, name: str, method: Callable[..., str | None], *args: Any) -> str | None:
        """``method(*args)`` of the sink ``name``; a failure is counted and logged once per format, never raised
        (a full disk or a bad value must not stop the analytics, nor the other formats)."""
        try:
            return method(*args)
        except Exception as exc:
            lost = exc.lost if isinstance(exc, OutputError) else 1
            failure = self.failures.get(name)
            if failure is None:
                self.failures[name] = OutputFailure(name, lost, f"{type(exc).__name__}: {exc}")
                log.error("output format %r failed (further failures are counted in the summary): %s", name, exc)
            else:
                failure.lost += lost
            return None

    def close(self) -> None:
        """Close every sink (they write what they buffered); one that fails does not keep the others open."""
        for name, sink in (*self._stores, *self._tables):
            self._call(name, sink.close)


@dataclass
class OutputFailure:
    """An output format that failed: results it could not write, and its first error."""

    format: str
    lost: int
    error: str


class Provenance:
    """``provenance.jsonl``: one JSON object per cadence change, steering value or skipped step."""

    def __init__(self, directory: Path | None) -> None:
        self.records: list[dict[str, Any]] = []
        self._file = (directory / "provenance.jsonl").open("w") if directory is not None else None

    def write(self, event: Applied) -> None:
        """Record a decision the ranks applied (reported by rank 0)."""
        decision = event.decision
        record = {
            "kind": "change",
            "step": event.applied_at,
            "decided_at": decision.step,
            "source": decision.source,
            "arrays": [c.array for c in event.changes],
            "changes": [{"array": c.array, "old": c.old, "new": c.new} for c in event.changes],
            "triggers": decision.triggers,
            "steering": decision.steering,
            "values": decision.values,
        }
        self._emit(record)

    def action(self, step: int, analytic: str, triggers: list[str], once: bool) -> None:
        """Record that ``analytic`` ran at ``step`` because ``triggers`` were active (``action.analytics``)."""
        self._emit({"kind": "action", "step": step, "analytic": analytic, "triggers": triggers, "once": once})

    def placement(self, event: PlacementChanged) -> None:
        """Record that a node moved an array placed ``auto`` in situ or in transit, from a step on."""
        record = {"kind": "placement", "step": event.step, "array": event.array, "where": event.where}
        self._emit(record | {"node": event.node, "held_bytes": event.held, "store_bytes": event.store})

    def dropped(self, array: str, step: int) -> None:
        """Record a complete step the analytics never started because newer ones came (policy latest)."""
        self._emit({"kind": "skipped", "step": step, "arrays": [array], "source": "latest"})

    def skipped(self, closed: Mapping[int, RankStats]) -> None:
        """Record the steps skipped by backpressure (every rank skips the same; rank 0's list)."""
        stats = closed.get(0) or next(iter(closed.values()), None)
        for array, step in stats.skipped_steps if stats is not None else ():
            self._emit({"kind": "skipped", "step": step, "arrays": [array], "source": "backpressure"})

    def _emit(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()

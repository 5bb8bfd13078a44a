"""What a run folder holds, read back: ``summary.json``, ``provenance.jsonl`` and the contract's analytics.

Only the standard library (and yaml) here: the summary table of ``doreisa report`` prints
without pandas, xarray or matplotlib. The folder may come from an older doreisa, or from a
run that was killed before it wrote its summary; what is missing is noted, not fatal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from doreisa.errors import DoreisaError

SUMMARY, PROVENANCE, CSV, PARQUET, CONTRACT = (
    "summary.json",
    "provenance.jsonl",
    "results.csv",
    "results.parquet",
    "contract.yaml",
)
#: Every run writes at least one of these (provenance.jsonl as soon as the run starts, even if it dies).
MARKERS = (SUMMARY, CSV, PARQUET, PROVENANCE)

#: What ``format_summary`` reads, with the value an older ``summary.json`` that lacks it stands for.
SUMMARY_DEFAULTS: dict[str, Any] = {
    "error": None,
    "wall_s": float("nan"),
    "first_result_s": None,
    "ranks": 0,
    "ranks_lost": [],
    "steps_analysed": {},
    "blocks_published": 0,
    "bytes_copied": 0,
    "steps_skipped": 0,
    "steps_dropped": 0,
    "skipped": [],
    "analytic_calls": 0,
    "graphs": {"cut": 0, "reused": 0},
    "output_failures": [],
    "analytic_failures": [],
    "steps_lost": [],
    "cadence_changes": [],
    "errors": [],
    "warnings": [],
    "per_rank": {},
}


@dataclass(frozen=True)
class Change:
    """A change the ranks applied (``provenance.jsonl`` kind ``change``)."""

    step: int
    decided_at: int | None
    source: str
    arrays: tuple[str, ...]
    moves: tuple[str, ...] = ()  # per array: "temperature: every 100 -> every 10"
    triggers: Mapping[str, Any] = field(default_factory=dict[str, Any])
    values: Mapping[str, Any] = field(default_factory=dict[str, Any])


@dataclass(frozen=True)
class Skipped:
    """A step that backpressure skipped, for some arrays (``provenance.jsonl`` kind ``skipped``)."""

    step: int
    arrays: tuple[str, ...]


@dataclass(frozen=True)
class RunFolder:
    """A run folder, read: its summary (None when the run wrote none), provenance, and what could not be read."""

    path: Path
    summary: dict[str, Any] | None
    changes: tuple[Change, ...]
    skipped: tuple[Skipped, ...]
    notes: tuple[str, ...]

    @property
    def table(self) -> Path | None:
        """The results table to read: Parquet if the run wrote one, else CSV, else None."""
        for name in (PARQUET, CSV):
            if (self.path / name).is_file():
                return self.path / name
        return None


def check_run_folder(path: str | os.PathLike[str]) -> Path:
    """``path`` as a ``Path``, once it is known to be a folder that ``doreisa run`` wrote.

    Raises
    ------
    DoreisaError
        For a path that does not exist, is not a folder, or holds none of the files a run writes.
    """
    path = Path(path)
    hint = "give the folder that `doreisa run --output DIR` wrote (or the contract's outputs.directory)"
    if not path.exists():
        raise DoreisaError(f"{path}: no such folder; {hint}")
    if not path.is_dir():
        raise DoreisaError(f"{path} is a file, not a run folder; {hint}")
    if not any((path / name).is_file() for name in MARKERS):
        raise DoreisaError(f"{path} is not a doreisa run folder: it has none of {', '.join(MARKERS)}; {hint}")
    return path


def read_run(path: str | os.PathLike[str]) -> RunFolder:
    """Read the summary and provenance of the run in ``path``.

    Raises
    ------
    DoreisaError
        For a folder that is not a run folder, or a ``summary.json`` that is not a JSON object.
    """
    path = check_run_folder(path)
    notes: list[str] = []
    summary = _read_summary(path / SUMMARY, notes)
    changes, skipped = _read_provenance(path / PROVENANCE, notes)
    return RunFolder(path, summary, changes, skipped, tuple(notes))


def _read_summary(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        notes.append(f"no {SUMMARY}: the run did not finish (killed?); what it wrote until then is shown")
        return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise DoreisaError(
            f"{path}: not readable as JSON ({exc}); the run may have been killed while writing it"
        ) from exc
    if not isinstance(data, dict):
        raise DoreisaError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    missing = [key for key in ("ok", *SUMMARY_DEFAULTS) if key not in data]
    if missing:
        notes.append(f"{SUMMARY} lacks {', '.join(missing)} (written by an older doreisa?): shown as empty")
    return data


def complete_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with every key ``format_summary`` reads, so that an older ``summary.json`` prints too."""
    out = {key: summary.get(key, default) for key, default in SUMMARY_DEFAULTS.items()}
    out = {**summary, **out, "ok": summary.get("ok", not summary.get("error"))}
    out["graphs"] = {"cut": 0, "reused": 0, **(out["graphs"] or {})}
    out["analytic_failures"] = [
        {"analytic": "?", "step": "?", "error": "", "count": 1, **f} for f in out["analytic_failures"]
    ]
    for f in out["analytic_failures"]:
        f.setdefault("last_step", f["step"])
    out["cadence_changes"] = [
        {"step": "?", "decided_at": "?", "source": "?", "changes": [], "values": {}, "steering": {}, **c}
        for c in out["cadence_changes"]
    ]
    return out


def _read_provenance(path: Path, notes: list[str]) -> tuple[tuple[Change, ...], tuple[Skipped, ...]]:
    """The changes and skipped steps; a line cut short by a killed run, or of a kind we do not know, is noted."""
    changes: list[Change] = []
    skipped: list[Skipped] = []
    unreadable: list[int] = []
    unknown: set[str] = set()
    lines = path.read_text().splitlines() if path.is_file() else []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            kind = record["kind"]
            if kind == "change":
                changes.append(_change(record))
            elif kind == "skipped":
                skipped.append(Skipped(int(record["step"]), tuple(map(str, record.get("arrays", ())))))
            elif kind != "action":  # a trigger's analytic ran: its values are in the results already
                unknown.add(str(kind))
        except (ValueError, TypeError, KeyError):
            unreadable.append(number)
    if unreadable:
        notes.append(f"{PROVENANCE}: line(s) {', '.join(map(str, unreadable[:10]))} not readable, left out")
    if unknown:
        notes.append(f"{PROVENANCE}: records of unknown kind {', '.join(sorted(unknown))} left out")
    return tuple(changes), tuple(skipped)


def _change(record: dict[str, Any]) -> Change:
    decided = record.get("decided_at")
    moved = record.get("changes") or ()
    return Change(
        step=int(record["step"]),
        decided_at=None if decided is None else int(decided),
        source=str(record["source"]),
        arrays=tuple(map(str, record.get("arrays") or [c["array"] for c in moved])),
        moves=tuple(f"{c['array']}: {_cadence(c.get('old'))} -> {_cadence(c.get('new'))}" for c in moved),
        triggers=dict(record.get("triggers") or {}),
        values=dict(record.get("values") or {}),
    )


def _cadence(cadence: Any) -> str:
    if isinstance(cadence, dict) and cadence.get("never"):
        return "never"
    if isinstance(cadence, dict) and "every" in cadence:
        return f"every {cadence['every']} steps"
    if isinstance(cadence, dict) and "every_time" in cadence:
        return f"every {cadence['every_time']} time units"
    return str(cadence)


def analytic_arrays(folder: Path) -> dict[str, tuple[str, ...]]:
    """The arrays each analytic label reads, from the run's copy of its contract; empty if it cannot be read.

    The contract is read as plain YAML, not loaded: loading checks that its output formats can
    be written here, which a machine that only looks at the results need not be able to do.
    """
    try:
        data = yaml.safe_load((folder / CONTRACT).read_text())
        out: dict[str, tuple[str, ...]] = {}
        for spec in data.get("analytics") or ():
            arrays = spec["arrays"]
            label = spec.get("name") or str(spec["function"]).rsplit(":", 1)[-1]
            out[str(label)] = tuple(map(str, arrays.values() if isinstance(arrays, dict) else arrays))
        return out
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError):
        return {}

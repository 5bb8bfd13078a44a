"""``report.html``: one self-contained page about a run (figures inline as PNG, no file or network beside it).

Every text that comes from the run (analytic names, error messages, tracebacks) is escaped:
an error message may hold anything, ``<script>`` included.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from doreisa import __version__
from doreisa.report._dataset import Loaded
from doreisa.report._figures import MAX_PANELS, ranks_figure, scalar_figure, timeline_figure
from doreisa.report._folder import RunFolder, analytic_arrays, complete_summary

#: Rows of a table shown at most (a run of 10 000 ranks has 10 000 rows per rank); the page says how many more.
MAX_ROWS = 256
#: Summary entries that have their own section (or table) on the page.
DETAILED = ("per_rank", "analytic_failures", "output_failures", "errors", "warnings", "cadence_changes")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.ok { color: #17702a; } .failed { color: #b3261e; }
img { max-width: 100%; } pre { white-space: pre-wrap; margin: 0; } .note { color: #7a5b00; }
"""


def render_page(run: RunFolder, loaded: Loaded) -> str:
    """The whole page, as text."""
    summary = complete_summary(run.summary) if run.summary is not None else None
    status = "no summary" if summary is None else ("ok" if summary["ok"] else "FAILED")
    title = f"doreisa run {run.path.resolve().name}: {status}"
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p>{_e(str(run.path.resolve()))} &middot; report by doreisa {_e(__version__)}</p>",
        *[f'<p class="note">{_e(note)}</p>' for note in loaded.notes],
        *_summary_section(summary),
        *_failures_section(summary),
        *_scalars_section(loaded, run),
        *_timeline_section(loaded, run, summary),
        *_ranks_section(summary),
        *_changes_section(run),
        *_analytics_section(loaded),
    ]
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _e(text: Any) -> str:
    return html.escape(str(text))


def _cell(value: Any) -> str:
    """A table cell: text escaped; several lines (a traceback) folded under their first line."""
    if value is None:
        return "<td></td>"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if "\n" in text.strip():
        first = text.strip().splitlines()[-1]
        return f"<td><details><summary>{_e(first)}</summary><pre>{_e(text)}</pre></details></td>"
    return f"<td>{_e(text)}</td>"


def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = list(rows)
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    lines = ["<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows[:MAX_ROWS]]
    more = f"<p>{len(rows) - MAX_ROWS} more rows not shown.</p>" if len(rows) > MAX_ROWS else ""
    return f"<table><tr>{head}</tr>\n" + "\n".join(lines) + "</table>" + more


def _records(records: Sequence[Mapping[str, Any]], skip: tuple[str, ...] = ()) -> str:
    """A table of dicts with the union of their keys as columns (summaries of any doreisa version)."""
    columns = [k for k in dict.fromkeys(k for r in records for k in r) if k not in skip]
    return _table(columns, ([r.get(c) for c in columns] for r in records))


def _figure(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


def _summary_section(summary: dict[str, Any] | None) -> list[str]:
    if summary is None:
        return ["<h2>Summary</h2>", "<p>The run wrote no summary.json: it did not finish.</p>"]
    rows = []
    for key, value in summary.items():
        if key in DETAILED:
            continue
        if key == "ok":
            rows.append((key, "ok" if value else "FAILED"))
        elif isinstance(value, list) and value and not isinstance(value[0], list | dict):
            rows.append((key, ", ".join(map(str, value))))
        elif isinstance(value, list):
            rows.append((key, f"{len(value)} (see below)" if value else "none"))
        elif isinstance(value, dict):
            rows.append((key, ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"))
        else:
            rows.append((key, value))
    css = "ok" if summary["ok"] else "failed"
    return [
        "<h2>Summary</h2>",
        f'<p class="{css}"><b>{"ok" if summary["ok"] else "FAILED"}</b></p>',
        _table(("entry of summary.json", "value"), rows),
    ]


def _failures_section(summary: dict[str, Any] | None) -> list[str]:
    if summary is None:
        return []
    out = ["<h2>Failures, errors and warnings</h2>"]
    parts = [
        ("Analytic failures", summary["analytic_failures"]),
        ("Output failures", summary["output_failures"]),
        ("Errors (ranks, node actors, shutdown)", summary["errors"]),
    ]
    for title, records in parts:
        if records:
            records = [_error_record(r) for r in records]
            out += [f"<h3>{_e(title)} ({len(records)})</h3>", _records(records, skip=("t",))]
    if summary["warnings"]:
        out += [
            f"<h3>Warnings ({len(summary['warnings'])})</h3>",
            _table(("warning",), ([w] for w in summary["warnings"])),
        ]
    if len(out) == 1:
        out.append("<p>None.</p>")
    return out


def _error_record(record: Any) -> dict[str, Any]:
    """A failure or error as a row; a runtime record's type (``t``: RankError, TriggerFailed) is its kind."""
    if not isinstance(record, dict):
        return {"error": record}
    return {"kind": record.get("kind", record["t"]), **record} if "t" in record else record


def scalar_series(loaded: Loaded) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every variable along ``step`` alone: its steps with a result and its values there."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, var in loaded.dataset.data_vars.items():
        if var.dims == ("step",) and var.dtype.kind in "biuf":
            steps = np.asarray(loaded.steps.get(str(name), var["step"].values))
            out[str(name)] = (steps, np.asarray(var.sel(step=steps).values, dtype=float))
    return out


def _scalars_section(loaded: Loaded, run: RunFolder) -> list[str]:
    series = scalar_series(loaded)
    out = ["<h2>Scalar results and monitors</h2>"]
    if not series:
        return [*out, "<p>No scalar result.</p>"]
    alt = f"{min(len(series), MAX_PANELS)} scalar results against step"
    out.append(_figure(scalar_figure(series, run.changes), alt))
    rest = list(series)[MAX_PANELS:]
    if rest:
        out.append(
            f"<p>Not drawn ({MAX_PANELS} panels at most; doreisa.open_run reads them all): {_e(', '.join(rest))}</p>"
        )
    return out


def timeline_rows(
    loaded: Loaded, run: RunFolder, summary: dict[str, Any] | None
) -> tuple[dict[str, list[int]], dict[str, list[int]], dict[str, list[int]]]:
    """Per array: the steps analysed (an analytic of it recorded a result), skipped and lost.

    An analytic whose arrays the run's ``contract.yaml`` does not say gets a row of its own.
    """
    reads = analytic_arrays(run.path)
    analysed: dict[str, set[int]] = {}
    for label, steps in loaded.steps.items():
        if not label.startswith("monitor:"):
            for row in reads.get(label, (label,)):
                analysed.setdefault(row, set()).update(steps)
    skipped: dict[str, set[int]] = {}
    pairs = [(a, s.step) for s in run.skipped for a in s.arrays]
    pairs += [(str(p[0]), int(p[1])) for p in (summary or {}).get("skipped", ()) if len(p) == 2]
    for array, step in pairs:
        skipped.setdefault(array, set()).add(step)
    lost: dict[str, set[int]] = {}
    for entry in (summary or {}).get("steps_lost", ()):
        if isinstance(entry, dict) and "array" in entry and "step" in entry:
            lost.setdefault(str(entry["array"]), set()).add(int(entry["step"]))
    return _sorted(analysed), _sorted(skipped), _sorted(lost)


def _sorted(rows: dict[str, set[int]]) -> dict[str, list[int]]:
    return {row: sorted(steps) for row, steps in rows.items()}


def _timeline_section(loaded: Loaded, run: RunFolder, summary: dict[str, Any] | None) -> list[str]:
    analysed, skipped, lost = timeline_rows(loaded, run, summary)
    out = ["<h2>Steps: analysed, skipped, lost</h2>"]
    if not (analysed or skipped or lost):
        return [*out, "<p>No step was analysed, skipped or lost.</p>"]
    out.append(_figure(timeline_figure(analysed, skipped, lost, run.changes), "steps analysed, skipped and lost"))
    counts = [
        (row, len(analysed.get(row, ())), len(skipped.get(row, ())), len(lost.get(row, ())))
        for row in dict.fromkeys([*analysed, *skipped, *lost])
    ]
    return [*out, _table(("array", "analysed", "skipped", "lost"), counts)]


def _ranks_section(summary: dict[str, Any] | None) -> list[str]:
    per_rank = (summary or {}).get("per_rank") or {}
    out = ["<h2>Ranks</h2>"]
    if not isinstance(per_rank, dict) or not per_rank:
        return [*out, "<p>No rank closed its bridge (or the summary is missing).</p>"]
    out.append(_figure(ranks_figure(per_rank), "blocks published, skipped and dropped, and MiB copied, per rank"))
    ranks = sorted(per_rank, key=lambda r: (not str(r).isdigit(), int(r) if str(r).isdigit() else 0, str(r)))
    records = [{"rank": r, **{k: v for k, v in per_rank[r].items() if k not in ("t", "skipped_steps")}} for r in ranks]
    return [*out, _records(records)]


def _changes_section(run: RunFolder) -> list[str]:
    out = ["<h2>Cadence changes and steering (provenance.jsonl)</h2>"]
    if not run.changes:
        return [*out, "<p>None.</p>"]
    rows = [
        (c.step, c.decided_at, c.source, "; ".join(c.moves) or "no cadence change", dict(c.triggers), dict(c.values))
        for c in run.changes
    ]
    return [*out, _table(("step", "decided at", "source", "cadence", "triggers", "values"), rows)]


def _analytics_section(loaded: Loaded) -> list[str]:
    rows = []
    for name, var in loaded.dataset.data_vars.items():
        steps = loaded.steps.get(str(name), [])
        shape = (
            "scalar" if var.dims == ("step",) else " x ".join(f"{d}: {n}" for d, n in var.sizes.items() if d != "step")
        )
        rows.append((name, shape, len(steps), steps[0] if steps else None, steps[-1] if steps else None))
    not_loaded = loaded.dataset.attrs.get("not_loaded", [])
    rows += [
        (label, "not loaded (no store kept it, or not a number)", len(loaded.steps.get(label, [])), None, None)
        for label in not_loaded
    ]
    if not rows:
        return ["<h2>Analytics</h2>", "<p>No result was recorded.</p>"]
    return ["<h2>Analytics</h2>", _table(("analytic", "result", "steps with a result", "first", "last"), rows)]

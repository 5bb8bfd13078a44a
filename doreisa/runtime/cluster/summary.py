"""The end of a run: ``summary.json`` and the table ``doreisa run`` prints."""

from __future__ import annotations

import subprocess
from typing import Any

import msgspec


def run_summary(
    session: Any, proc: subprocess.Popen[bytes] | None, error: str | None, problems: list[str], wall: float
) -> dict[str, Any]:
    """``summary.json``: what the run did, and whether anything failed (``ok``).

    ``error`` is what ended the run early, if anything did; ``problems``, what could not be
    done while stopping it (an actor already dead). Either makes the run not ``ok``.
    """
    state = session.state
    if error is None and problems:
        error = problems[0]
    closed = list(state.closed.values())
    ranks = {str(r): msgspec.to_builtins(stats) for r, stats in sorted(state.closed.items())}
    failures = [f.as_dict() for f in session.driver.failures]
    exit_code = None if proc is None else proc.returncode
    ok = not (failures or state.lost_steps or state.lost_ranks or error or state.errors or exit_code not in (0, None))
    shutdown = [{"kind": "shutdown", "error": text} for text in problems]
    return {
        "ok": ok,
        "error": error,
        "simulation_exit_code": exit_code,
        "wall_s": round(wall, 3),
        "ranks": len(state.hello),
        "ranks_lost": sorted(state.lost_ranks),
        "steps_analysed": dict(session.driver.counts.steps),
        "blocks_published": sum(s.published for s in closed),
        "bytes_copied": sum(s.bytes_copied for s in closed),
        "steps_skipped": sum(s.skipped for s in closed),
        "steps_dropped": sum(s.dropped for s in closed),
        "skipped": sorted({tuple(x) for s in closed for x in s.skipped_steps}),
        "analytic_calls": session.driver.counts.calls,
        "graphs": {"cut": session.cuts.misses, "reused": session.cuts.hits},
        "results_recorded": session.results.count,
        "array_results_not_saved": session.results.unsaved,
        "analytic_failures": failures,
        "steps_lost": msgspec.to_builtins(state.lost_steps),
        "cadence_changes": [r for r in session.provenance.records if r["kind"] == "change"],
        "errors": [*msgspec.to_builtins(state.errors), *shutdown],
        "per_rank": ranks,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The end-of-run table."""
    rows = [
        ("status", "ok" if summary["ok"] else "FAILED"),
        ("wall time", f"{summary['wall_s']:.1f} s"),
        ("ranks", f"{summary['ranks']} (lost: {summary['ranks_lost'] or 'none'})"),
        ("blocks copied", f"{summary['blocks_published']} ({summary['bytes_copied'] / 2**20:.1f} MiB)"),
        ("steps analysed", ", ".join(f"{k}: {v}" for k, v in summary["steps_analysed"].items()) or "none"),
        ("steps skipped (backpressure)", str(summary["steps_skipped"])),
        ("steps dropped (analytics unavailable)", str(summary["steps_dropped"])),
        ("steps lost (incomplete)", str(len(summary["steps_lost"]))),
        ("analytic calls", f"{summary['analytic_calls']} ({len(summary['analytic_failures'])} failed)"),
        ("cadence changes / steering", str(len(summary["cadence_changes"]))),
        ("task graphs cut / reused", f"{summary['graphs']['cut']} / {summary['graphs']['reused']}"),
    ]
    if summary["error"]:
        rows.append(("error", summary["error"]))
    width = max(len(k) for k, _ in rows)
    lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
    for change in summary["cadence_changes"][:10]:
        moved = ", ".join(f"{c['array']}: {_cadence(c['old'])} -> {_cadence(c['new'])}" for c in change["changes"])
        values = ", ".join(f"{k} = {v:g}" for k, v in change["values"].items())
        steering = f" steering {change['steering']}" if change["steering"] else ""
        lines.append(
            f"  * step {change['step']} (decided at {change['decided_at']}, {change['source']}): "
            f"{moved or 'no cadence change'}{f' [{values}]' if values else ''}{steering}"
        )
    for failure in summary["analytic_failures"][:10]:
        lines.append(f"  ! {failure['analytic']} at step {failure['step']}: {failure['error']}")
    return "doreisa run summary\n" + "\n".join(lines)


def _cadence(c: dict[str, Any]) -> str:
    return f"every {c['every']} steps" if "every" in c else f"every {c['every_time']:g} time units"

"""The end of a run: ``summary.json`` and the table ``doreisa run`` prints."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from typing import Any

import msgspec

from doreisa.runtime.cluster.cost import cost_text, estimate


def run_summary(
    session: Any,
    proc: subprocess.Popen[bytes] | None,
    error: str | None,
    problems: list[str],
    wall: float,
    started: float | None = None,
) -> dict[str, Any]:
    """``summary.json``: what the run did, and whether anything failed (``ok``).

    ``error`` is what ended the run early, if anything did; ``problems``, what could not be
    done while stopping it (an actor already dead). Either makes the run not ``ok``.
    ``started`` (``time.monotonic()`` at launch) gives ``first_result_s``: how long the user
    waited for the first result, Ray's start included.
    """
    first = session.results.first_at
    state = session.state
    closed = list(state.closed.values())
    ranks = {str(r): msgspec.to_builtins(stats) for r, stats in sorted(state.closed.items())}
    failures = [f.as_dict() for f in session.driver.failures]
    exit_code = None if proc is None else proc.returncode
    outputs = [dataclasses.asdict(f) for f in session.results.failures.values()]
    taken = session.last_node_counts  # what the node actors took into Ray: ranks that died never report theirs
    not_stored = sum(c.not_stored for c in taken)
    said = next((c.store_error for c in taken if c.store_error), "")  # the first refusal, as a node reported it
    refused = f"{not_stored} block(s) could not be stored in Ray's object store: {said}" if not_stored else None
    reasons = _failure_reasons(state, failures, exit_code, problems + [_output_reason(f) for f in outputs], refused)
    skipped = sorted({tuple(x) for s in closed for x in s.skipped_steps})  # every rank skips the same steps
    shutdown = [{"kind": "shutdown", "error": text} for text in problems]
    return {
        "ok": not (reasons or error),
        "error": error or (reasons[0] if reasons else None),
        "simulation_exit_code": exit_code,
        "wall_s": round(wall, 3),
        "first_result_s": round(first - started, 3) if first is not None and started is not None else None,
        "ranks": len(state.hello),
        "ranks_lost": list(state.lost_order),  # in the order the runtime saw them go: the first is the first to die
        "steps_analysed": dict(session.driver.counts.steps),
        "blocks_published": sum(c.blocks for c in taken) if taken else sum(s.published for s in closed),
        "blocks_not_stored": not_stored,  # taken from the ranks, refused by Ray's store: lost
        "bytes_copied": sum(s.bytes_copied for s in closed),
        "steps_skipped": len(skipped),
        # complete, never analysed: newer steps came while the analytics were busy (backpressure.policy latest)
        "steps_superseded": len(state.dropped_latest),
        # a step a rank dropped is dropped by every rank that was still attached: the most any rank dropped
        "steps_dropped": max((s.dropped for s in closed), default=0),
        "blocks_dropped": sum(s.dropped for s in closed),
        "skipped": skipped,
        "analytic_calls": session.driver.counts.calls,
        "graphs": {"cut": session.cuts.misses, "reused": session.cuts.hits},
        "results_recorded": session.results.count,
        "array_results_not_saved": session.results.unsaved,
        "output_failures": outputs,
        "analytic_failures": failures,
        "steps_lost": msgspec.to_builtins(state.lost_steps),
        "cadence_changes": [r for r in session.provenance.records if r["kind"] == "change"],
        "errors": [*msgspec.to_builtins(state.errors), *shutdown],
        "nonfinite": dict(state.nonfinite),
        "warnings": state.warnings + _unfilled_windows(session) + _nonfinite_warnings(state.nonfinite),
        "cost": _cost(session, closed),
        "per_rank": ranks,
    }


def _cost(session: Any, closed: list[Any]) -> dict[str, Any]:
    nodes = [c.cpu_s for c in session.last_node_counts]
    ray_cpu = sum(nodes) if nodes and None not in nodes else None
    driver = time.process_time() - session.cpu_started
    return estimate(ray_cpu, driver, sum(s.publish_s for s in closed))


def _unfilled_windows(session: Any) -> list[str]:
    """Analytics never called because the run ended before their window filled."""
    analysed = session.driver.counts.steps
    out = []
    for b in session.bound:
        short = [a for a in dict.fromkeys(b.arrays) if analysed.get(a, 0) < b.window]
        if short:
            counts = ", ".join(f"{a!r}: {analysed.get(a, 0)}" for a in short)
            out.append(
                f"analytic {b.label} was never called: its window is {b.window} steps and the run analysed "
                f"fewer ({counts}); lower its window or run longer"
            )
    return out


def _nonfinite_warnings(nonfinite: dict[str, dict[str, int]]) -> list[str]:
    """The arrays with ``finite: true`` that held NaN or Inf: not a failure of the run, but worth a look."""
    return [
        f"array {array!r}: {c['values']} non-finite value(s) (NaN or Inf) in {c['steps']} step(s), "
        f"steps {c['first_step']} to {c['last_step']}"
        for array, c in nonfinite.items()
    ]


def _failure_reasons(
    state: Any, failures: list[dict[str, Any]], exit_code: int | None, problems: list[str], refused: str | None = None
) -> list[str]:
    """Why the run is not ok, most telling first (empty: it is); ``refused``: blocks Ray's store would not take,
    first, as the cause of the steps they left incomplete."""
    reasons: list[str] = [] if refused is None else [refused]
    if state.lost_order:
        reasons.append(f"ranks {list(state.lost_order)} disconnected without close() (the first died first)")
    if exit_code not in (0, None):
        reasons.append(f"the simulation exited with code {exit_code}")
    if failures:
        first = failures[0]
        reasons.append(
            f"{len(failures)} analytic failure(s); first: {first['analytic']} at step {first['step']}: {first['error']}"
        )
    if state.lost_steps:
        why = "; ".join(sorted({s.reason or "incomplete" for s in state.lost_steps}))
        reasons.append(f"{len(state.lost_steps)} step(s) lost ({why})")
    dropped = max((s.dropped for s in state.closed.values()), default=0)
    if dropped:
        reasons.append(f"{dropped} step(s) dropped: ranks lost the analytics and went on without them")
    if state.errors:
        reasons.append(
            f"{len(state.errors)} error(s) reported by the ranks or node actors; first: {state.errors[0].error}"
        )
    return reasons + problems


def _output_reason(failure: dict[str, Any]) -> str:
    return f"output format {failure['format']!r} lost {failure['lost']} result(s); first: {failure['error']}"


def _first_result(seconds: float | None) -> str:
    return "" if seconds is None else f" (first result after {seconds:.1f} s)"


def format_summary(summary: dict[str, Any]) -> str:
    """The end-of-run table."""
    rows = [
        ("status", "ok" if summary["ok"] else "FAILED"),
        ("wall time", f"{summary['wall_s']:.1f} s" + _first_result(summary.get("first_result_s"))),
        ("ranks", f"{summary['ranks']} (lost: {summary['ranks_lost'] or 'none'})"),
        ("blocks copied", f"{summary['blocks_published']} ({summary['bytes_copied'] / 2**20:.1f} MiB)"),
        ("steps analysed", ", ".join(f"{k}: {v}" for k, v in summary["steps_analysed"].items()) or "none"),
        ("steps skipped (backpressure)", str(summary["steps_skipped"])),
        ("steps dropped (analytics unavailable)", str(summary["steps_dropped"])),
        ("steps lost", str(len(summary["steps_lost"]))),
        ("analytic calls", f"{summary['analytic_calls']} ({len(summary['analytic_failures'])} failed)"),
        ("cadence changes / steering", str(len(summary["cadence_changes"]))),
        ("task graphs cut / reused", f"{summary['graphs']['cut']} / {summary['graphs']['reused']}"),
    ]
    if summary.get("steps_superseded"):
        rows.append(("steps superseded (policy latest)", str(summary["steps_superseded"])))
    if summary.get("blocks_not_stored"):
        rows.append(("blocks not stored (Ray's store full)", str(summary["blocks_not_stored"])))
    if summary.get("cost"):
        rows.append(("cost (estimate)", cost_text(summary["cost"])))
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
        again = f" (and {failure['count'] - 1} more steps, last {failure['last_step']})" if failure["count"] > 1 else ""
        lines.append(f"  ! {failure['analytic']} at step {failure['step']}: {failure['error']}{again}")
    lines += [f"  ! {_output_reason(failure)}" for failure in summary.get("output_failures", [])]
    lines += [f"  ? {warning}" for warning in summary["warnings"][:10]]
    return "doreisa run summary\n" + "\n".join(lines)


def _cadence(c: dict[str, Any]) -> str:
    if c.get("never"):
        return "never"
    return f"every {c['every']} steps" if "every" in c else f"every {c['every_time']:g} time units"

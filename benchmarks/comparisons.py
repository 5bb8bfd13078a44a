"""Our figures as ratios to the peers' (measured in the same benchmark run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import peers
from bench_common import Entry, judged

TARGET_PEER = "deisa-ray-0.1.8"


@dataclass(frozen=True)
class Comparison:
    metric: str
    scenario: str
    ours: Callable[[dict[str, Any]], float]  # from our run of the scenario, in ms
    theirs: Callable[[dict[str, Any]], float | None]  # from a peer's record, in ms
    ratio_target: float
    targets: tuple[str, ...]  # peers the target applies to
    what: str


def _stat(key: str, field: str) -> Callable[[dict[str, Any]], float | None]:
    def get(record: dict[str, Any]) -> float | None:
        value = (record.get(key) or {}).get(field)
        return None if value is None else 1e3 * value

    return get


COMPARISONS = (
    Comparison(
        "sim_blocked_per_wanted_step_ms",
        "dense-C256",
        lambda r: r["publish_us"]["median"] / 1e3,
        _stat("b_send_s", "median"),
        0.01,
        (TARGET_PEER,),
        "time a rank is blocked per wanted step: our publish vs the peer's send/add_chunk (median)",
    ),
    Comparison(
        "analytics_overhead_c16_ms",
        "dense-C16",
        lambda r: r["service_ms"]["median"],
        peers.service_ms,
        0.3,
        (TARGET_PEER,),
        "per-step analytics service time, 16x16 blocks (pure overhead): end(t) - max(end(t-1), data of t)",
    ),
    Comparison(
        "sparse_need_sim_step_ms",
        "sparse-C256",
        lambda r: r["step_us"]["mean"] / 1e3,
        _stat("sim_step_cost_s", "mean"),
        0.01,
        tuple(peers.PEERS),
        "analytics need 1 step in 10: mean simulation cost per step (fill + publish/send)",
    ),
)


def entries(
    our_runs: dict[str, Any] | None, records: dict[tuple[str, str], dict[str, Any]], *, missing: list[str]
) -> list[Entry]:
    """One entry per comparison and peer; a missing peer gives an entry without reference."""
    out = []
    for c in COMPARISONS:
        ours = c.ours(our_runs[c.scenario]) if our_runs and c.scenario in our_runs else None
        for peer in peers.PEERS:
            rec = records.get((peer, c.scenario))
            ref, note = None, ""
            if rec is None:
                note = f"peer not measured in this run ({', '.join(missing) or 'not run'})"
            elif rec.get("status") != "ok":
                note = f"peer run {rec.get('status')}: {str(rec.get('error'))[:200]}"
            else:
                ref = c.theirs(rec)
            applies = peer in c.targets
            entry = Entry(
                c.metric,
                ours,
                "ms",
                reference=ref,
                params={"peer": peer, "scenario": c.scenario, "ranks": 4, "iterations": 100, **_peer_params(rec)},
                notes=f"{c.what}. {note}".strip(),
                target=f"ratio <= {c.ratio_target:g}" if applies else "info",
            )
            out.append(judged(entry, ratio_at_most=c.ratio_target) if applies else judged(entry))
    return out


def _peer_params(rec: dict[str, Any] | None) -> dict[str, Any]:
    if not rec or rec.get("status") != "ok":
        return {}
    mem = rec.get("d_memory") or {}
    return {"peer_foreign_cpu": round(mem.get("foreign_cpu_frac", float("nan")), 3)}


def slim(record: dict[str, Any]) -> dict[str, Any]:
    """A peer's record without its raw timeline, plus our service-time reading of it."""
    out = {k: v for k, v in record.items() if k != "raw"}
    out["service_ms"] = peers.service_ms(record)
    return out

"""Our figures as ratios to the peers' (measured in the same benchmark run)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import peers
from bench_common import Entry, judged, med

#: The peers whose design is closest to ours (an MPI bridge feeding analytics on a task
#: cluster, no backpressure): the targets of issue #6 against deisa-ray apply to the Dask
#: backend of Deisa as well (issue #17). doreisa 0.3.4 is shown for information there.
TARGET_PEERS = ("deisa-ray-0.1.8", "deisa-dask-0.6.3")


@dataclass(frozen=True)
class Comparison:
    metric: str
    scenario: str
    ours: Callable[[dict[str, Any]], float]  # from our run of the scenario, in ms
    theirs: Callable[[dict[str, Any]], float | None]  # from a peer's record, in ms
    ratio_target: float
    targets: tuple[str, ...]  # peers the target applies to
    what: str
    also: tuple[tuple[str, Callable[[dict[str, Any]], float | None]], ...] = ()  # more peer figures, in params
    ours_key: str = ""  # our runs of the scenario under another key of ``our_runs`` (default: ``scenario``)


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
        TARGET_PEERS,
        "time a rank is blocked per wanted step: our publish vs the peer's send/add_chunk (median)",
    ),
    Comparison(
        "analytics_overhead_c16_ms",
        "dense-C16",
        lambda r: r["service_ms"]["median"],
        peers.service_ms,
        0.3,
        TARGET_PEERS,
        "per-step analytics service time, 16x16 blocks (pure overhead): end(t) - max(previous end, data of t)",
        # deisa-dask's callbacks overlap and end in bursts: its median gap understates its time per step
        (("peer_mean_ms", peers.service_mean_ms),),
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
    Comparison(
        "whole_run_ms",
        "dense-C256",
        lambda r: 1e3 * r["wall_s"],
        lambda r: None if r.get("c_total_wall_s") is None else 1e3 * r["c_total_wall_s"],
        0.5,
        ("deisa-ray-0.1.8",),
        "the whole run as a user launches it, Ray's start and stop included: doreisa run (launch.py) against the "
        "peer's script, launch to exit",
        ours_key="doreisa-run-dense-C256",
    ),
)


def our_runs(raw: dict[str, Any]) -> dict[str, Any]:
    """Our runs of the peers' scenarios: coupled ones (sections.peer_scenarios), whole doreisa runs (launch.py)."""
    runs = dict(raw.get("peer_scenarios") or {})
    if (raw.get("launch") or {}).get("dense-C256"):
        runs["doreisa-run-dense-C256"] = raw["launch"]["dense-C256"]
    return runs


def entries(
    our_runs: dict[str, Any] | None, records: dict[tuple[str, str], list[dict[str, Any]]], *, missing: list[str]
) -> list[Entry]:
    """One entry per comparison and peer; a missing peer gives an entry without reference.

    A scenario run several times on each side (``peers.REPEATS``: a list of runs) is compared
    by the median over runs of each run's figure.
    """
    out = []
    for c in COMPARISONS:
        mine = _as_runs(our_runs.get(c.ours_key or c.scenario) if our_runs else None)
        ours = _median([c.ours(r) for r in mine])
        for peer in peers.PEERS:
            recs = records.get((peer, c.scenario)) or []
            ok = [r for r in recs if r.get("status") == "ok"]
            theirs = [c.theirs(r) for r in ok]
            ref, note = _median(theirs), ""
            if not recs:
                note = f"peer not measured in this run ({', '.join(missing) or 'not run'})"
            elif not ok:
                note = f"peer run {recs[0].get('status')}: {str(recs[0].get('error'))[:200]}"
            elif len(ok) < len(recs):
                note = f"{len(recs) - len(ok)} of the peer's {len(recs)} runs failed"
            applies = peer in c.targets
            params = {"peer": peer, "scenario": c.scenario, "ranks": 4, "iterations": 100, **_peer_params(ok)}
            params.update(_also(c, ok))
            if len(mine) > 1 or len(recs) > 1:
                params["runs_ms"] = {"ours": _rounded(c.ours(r) for r in mine), "peer": _rounded(theirs)}
            entry = Entry(
                c.metric,
                ours,
                "ms",
                reference=ref,
                params=params,
                notes=f"{c.what}{'; median over runs' if len(mine) > 1 else ''}. {note}".strip(),
                target=f"ratio <= {c.ratio_target:g}" if applies else "info",
            )
            out.append(judged(entry, ratio_at_most=c.ratio_target) if applies else judged(entry))
    return out


def _as_runs(value: dict[str, Any] | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [] if value is None else value if isinstance(value, list) else [value]


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return med(known) if known else None


def _rounded(values: Iterable[float | None]) -> list[float | None]:
    return [None if v is None else round(v, 4) for v in values]


def _also(c: Comparison, recs: list[dict[str, Any]]) -> dict[str, Any]:
    """The comparison's extra peer figures (median over the peer's working runs)."""
    out = {}
    for name, fn in c.also:
        value = _median([fn(r) for r in recs])
        if value is not None:
            out[name] = round(value, 4)
    return out


def _peer_params(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """The foreign CPU share of the peer's (working) runs, the largest if several."""
    shares = [share for r in recs if (share := (r.get("d_memory") or {}).get("foreign_cpu_frac")) is not None]
    return {"peer_foreign_cpu": round(max(shares), 3)} if shares else {}


def slim(record: dict[str, Any]) -> dict[str, Any]:
    """A peer's record without its raw timeline, plus our service-time reading of it."""
    out = {k: v for k, v in record.items() if k != "raw"}
    out["service_ms"] = peers.service_ms(record)
    out["service_mean_ms"] = peers.service_mean_ms(record)
    return out

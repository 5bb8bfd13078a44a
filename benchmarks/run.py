"""doreisa's benchmark suite (GitHub issue #6): ``make bench`` / ``make bench-quick``.

Writes ``benchmarks/results/latest.json`` (one entry per figure), ``latest.md`` and PNG
plots. See ``benchmarks/README.md`` for what each metric means and what limits it.

    .venv/bin/python benchmarks/run.py --quick            # a few minutes, no peers
    .venv/bin/python benchmarks/run.py --quick --peers    # + the peers' 15 runs (3 peers x 5)
    .venv/bin/python benchmarks/run.py                    # full: more steps, 8/16 ranks, peers
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doreisa.runtime.cluster import prepare_ray_env

prepare_ray_env()  # before anything imports ray: the loopback trap (shared/RELIABILITY.md)

import cluster_sections  # noqa: E402
import comparisons  # noqa: E402
import launch  # noqa: E402
import peers  # noqa: E402
import rank_footprint  # noqa: E402
import report  # noqa: E402
from bench_common import CpuMeter, Entry, loadavg  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Config:
    """How much of each benchmark to run."""

    name: str
    skip_calls: int
    copy_reps: int
    copy_budget_bytes: float
    step_ranks: tuple[int, ...]
    step_chunks: tuple[int, ...]
    step_steps: int
    step_sleep: float
    memory_steps: int


QUICK = Config("quick", 100_000, 100, 3e8, (1, 2, 4), (16, 256), 30, 0.1, 2000)  # memory: the 2,000 steps of the target
FULL = Config("full", 300_000, 300, 1e9, (1, 2, 4, 8, 16), (16, 256), 100, 0.1, 2000)


class Suite:
    """Runs the sections one after the other; a failing section becomes a missing entry."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.entries: list[Entry] = []
        self.raw: dict[str, Any] = {}
        self.log: list[str] = []

    def section(self, name: str, fn: Callable[[], list[Entry]], missing: list[str]) -> None:
        """Run ``fn``; record its entries with the foreign CPU share measured around it."""
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        meter, started = CpuMeter(), time.monotonic()
        try:
            entries = fn()
        except Exception as exc:
            traceback.print_exc()
            note = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
            entries = [Entry(metric, None, "", notes=note) for metric in missing]
        foreign = meter.foreign()
        for entry in entries:
            entry.params.setdefault("foreign_cpu", round(foreign, 3))
        self.entries += entries
        self.log.append(f"{name}: {time.monotonic() - started:.0f} s, foreign CPU {100 * foreign:.0f} %")
        print(f"[bench] {self.log[-1]}", file=sys.stderr, flush=True)


def start_ray() -> str:
    """A private Ray on this machine (127.0.0.1, own temp dir); returns the temp dir."""
    from doreisa.runtime.cluster.setup import start_ray as start

    temp_dir = tempfile.mkdtemp(prefix="dbench-", dir="/tmp")
    start(None, temp_dir=temp_dir, object_store_memory=2 << 30)
    return temp_dir


def ours(suite: Suite, profile: bool) -> None:
    """Every doreisa benchmark, on one private Ray instance."""
    import ray
    import sections

    cfg = suite.config
    temp_dir = start_ray()
    try:
        suite.section("publish_skip", lambda: sections.publish_skip(cfg, suite.raw, profile), ["publish_skip_us"])
        suite.section("monitor_cost", lambda: sections.monitor_cost(cfg, suite.raw), ["monitor_cost_us"])
        suite.section("publish_copy", lambda: sections.publish_copy(cfg, suite.raw, profile), ["publish_copy_ratio"])
        suite.section("native_publish", lambda: sections.native_publish(cfg, suite.raw), ["native_publish"])
        suite.section("step_overhead", lambda: sections.step_overhead(cfg, suite.raw), ["step_overhead_ms"])
        suite.section("peer_scenarios", lambda: sections.peer_scenarios(suite.raw), ["peer_scenarios"])
        suite.section("memory", lambda: sections.memory(cfg, suite.raw), ["memory_growth_mb"])
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_peers(suite: Suite) -> list[Entry]:
    """The peers' scenarios (``peers.REPEATS`` runs each, else one); then our figures as ratios to theirs."""
    gone = peers.missing()
    if gone:
        print(f"[bench] peers not set up ({', '.join(gone)}); create their venvs with:", file=sys.stderr)
        print(peers.setup_help(), file=sys.stderr)
    records: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for peer in peers.PEERS:
        if peer in gone:
            continue
        for scenario in peers.SCENARIOS:
            records[(peer, scenario)] = runs = []
            for _ in range(peers.REPEATS.get(scenario, 1)):
                print(f"[bench] peer {peer} {scenario} ...", file=sys.stderr, flush=True)
                started = time.monotonic()
                runs.append(rec := peers.run_peer(peer, scenario))
                print(
                    f"[bench] peer {peer} {scenario}: {rec.get('status')} in {time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    suite.raw["peers"] = {f"{p}/{s}": [comparisons.slim(r) for r in runs] for (p, s), runs in records.items()}
    return comparisons.entries(comparisons.our_runs(suite.raw), records, missing=gone)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a few minutes); no peers unless --peers")
    parser.add_argument("--peers", action=argparse.BooleanOptionalAction, default=None, help="run the peer baselines")
    parser.add_argument("--profile", action="store_true", help="add cProfile output of publish to the results")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    with_peers = args.peers if args.peers is not None else not args.quick
    suite = Suite(config)
    meter, started, load_before = CpuMeter(), time.monotonic(), loadavg()
    quick = config is QUICK
    suite.section(
        "rank_footprint", lambda: rank_footprint.entries(quick, suite.raw), ["rank_import_ms", "rank_rss_mb"]
    )  # fresh interpreters, before Ray starts
    suite.section("launch", lambda: launch.entries(suite.raw, 3), ["first_result_s"])  # idem
    ours(suite, args.profile)
    suite.section("scaling", lambda: cluster_sections.scaling(quick, suite.raw), ["scheduler_tasks_per_s"])
    suite.section("placement", lambda: cluster_sections.placement(quick, suite.raw), ["in_transit_publish_ratio"])
    if with_peers:
        suite.section("peers", lambda: run_peers(suite), [])
    else:
        suite.entries += comparisons.entries(comparisons.our_runs(suite.raw), {}, missing=["not run (--peers)"])
    meta = {
        "mode": config.name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_s": round(time.monotonic() - started, 1),
        "foreign_cpu": round(meter.foreign(), 3),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "cores": os.cpu_count(),
        "sections": suite.log,
        "peers": "run" if with_peers else "not run",
    }
    paths = report.write(args.output, [judged_entry(e) for e in suite.entries], suite.raw, meta)
    print(report.table(suite.entries), file=sys.stderr)
    print(f"[bench] wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


def judged_entry(entry: Entry) -> Entry:
    """Entries arrive judged; this only rounds numbers for the report."""
    for key in ("value", "reference", "ratio"):
        value = getattr(entry, key)
        if isinstance(value, float):
            setattr(entry, key, float(f"{value:.4g}"))
    return entry


if __name__ == "__main__":
    sys.exit(main())

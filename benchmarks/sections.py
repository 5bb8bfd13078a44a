"""Each doreisa benchmark as report entries (needs the Ray that ``run.py`` started)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import peers
import scenarios
from bench_common import Entry, judged

HERE = Path(__file__).parent
SKIP_TARGET_US = 2.0
COPY_TARGET = 2.0  # issue #6, blocks of 1 MiB and more
#: issue #17: cold publish / memcpy at 64 KiB and 1 MiB
COPY_TARGETS = {64 << 10: 1.5, 1 << 20: 1.1}
STEP_TARGET_MS, STEP_P90_TARGET_MS = 2.0, 5.0  # issue #17: last block published -> result, median and p90
MEMORY_TARGET_MB = 20.0
SLOPE_TARGET = 5.0  # MB per 1000 steps
#: The scenario of shared/peers/README.md: 4 ranks, 100 steps, one C x C block per rank.
PEER_RANKS, PEER_STEPS = 4, 100
#: Like deisa-ray 0.1.8, the simulation never waits for the analytics (only for a free ring slot).
NO_BACKPRESSURE = 1000


def _call_us(out: dict[str, Any]) -> float:
    """Median of a rank's single timed calls minus the timer's own cost, in µs."""
    return (out["single_ns_median"] - out["timer_ns_median"]) / 1e3


def publish_skip(cfg: Any, raw: dict[str, Any], profile: bool) -> list[Entry]:
    out = scenarios.publish_skip(calls=cfg.skip_calls, profile=profile)
    raw["publish_skip"] = out
    entry = Entry(
        "publish_skip_us",
        _call_us(out),
        "us",
        reference=SKIP_TARGET_US,
        target=f"<= {SKIP_TARGET_US:g} us",
        params={
            "calls": out["calls"],
            "single_call_p90_us": round(out["single_ns_p90"] / 1e3, 3),
            "timer_us": round(out["timer_ns_median"] / 1e3, 3),
            "batch_median_us": round(out["batch_ns_median"] / 1e3, 3),
            "batch_min_us": round(out["batch_ns_min"] / 1e3, 3),
        },
        notes="median of single timed calls minus the timer's own cost; one rank under mpiexec -n 1 with a live "
        "Session. batch_*: per call in batches of 1000 (a batch of ms is often preempted on a shared machine)",
    )
    return [judged(entry, at_most=SKIP_TARGET_US)]


def monitor_cost(cfg: Any, raw: dict[str, Any]) -> list[Entry]:
    calls = max(2000, cfg.skip_calls // 20)
    out = scenarios.publish_monitor(calls=calls)
    raw["monitor_cost"] = out
    skip = raw.get("publish_skip") or {}
    entry = Entry(
        "monitor_cost_us",
        _call_us(out),
        "us",
        params={
            "ranks": 2,
            "block": "16x16",
            "calls": calls,
            "single_call_p90_us": round(out["single_ns_p90"] / 1e3, 3),
            "publish_skip_us": round(_call_us(skip), 3) if skip else None,
        },
        notes="publish of an unwanted step when a monitor (max of the block) is due every step: one reduction of "
        "the local block + one MPI allgather of a few floats (2 ranks under mpiexec)",
    )
    return [entry]


def publish_copy(cfg: Any, raw: dict[str, Any], profile: bool) -> list[Entry]:
    out = scenarios.publish_copy(reps=cfg.copy_reps, budget_bytes=cfg.copy_budget_bytes, profile=profile)
    raw["publish_copy"] = out
    entries = []
    penalty = out.get("cold_penalty", {})
    for name in scenarios.COPY_SIZES:
        r = out[name]
        t, w = r["median_ns"], r["warm_median_ns"]
        params = {
            "block_bytes": r["nbytes"],
            "publish_us": round(t["publish"] / 1e3, 2),
            "copyto_us": round(t["copyto"] / 1e3, 2),
            "copy_us": round(t["copy"] / 1e3, 2),
            "warm_publish_us": round(w["publish"] / 1e3, 2),
            "warm_copyto_us": round(w["copyto"] / 1e3, 2),
            "warm_ratio_memcpy": round(w["publish"] / w["copyto"], 3),
            "reps": r["reps"],
            "slow_publishes": r["slow_publishes"],
            "machine_cold_penalty_us": {k: round(v, 1) for k, v in penalty.items()},
            # posts that found the node actor asleep (a system call), out of every publish of every size
            "wakes_all_sizes": (out.get("stats") or {}).get("wakes"),
        }
        bound = COPY_TARGETS.get(r["nbytes"], COPY_TARGET if r["nbytes"] >= 1 << 20 else None)
        memcpy = Entry(
            "publish_copy_ratio_memcpy",
            t["publish"] / t["copyto"],
            "x",
            reference=bound,
            target="none" if bound is None else f"<= {bound:g}",
            params=params,
            notes=f"publish(wanted) / np.copyto into a preallocated array, {_size(r['nbytes'])}: first call of "
            "interleaved bursts (medians); warm_ratio_memcpy: the later calls of the bursts",
        )
        entries.append(judged(memcpy, at_most=bound))
        entries.append(
            Entry(
                "publish_copy_ratio_copy",
                t["publish"] / t["copy"],
                "x",
                params={"block_bytes": r["nbytes"], "warm_ratio_copy": round(w["publish"] / w["copy"], 3)},
                notes=f"publish(wanted) / block.copy(), {_size(r['nbytes'])}",
            )
        )
    return entries


def native_publish(cfg: Any, raw: dict[str, Any]) -> list[Entry]:
    """publish from C (doreisa.h) against the Python bridge (same run) and memcpy (same loop)."""
    import tempfile

    from doreisa import native

    with tempfile.TemporaryDirectory(prefix="dbench-native-") as tmp:
        where = Path(tmp)
        native.build(where)
        program = where / "native_bench"
        compile_ = [*shlex.split(native.find_cc()), "-O2", *native.cflags(), "-o", str(program)]
        subprocess.run([*compile_, str(HERE / "native_bench.c"), *native.libs(where)], check=True)
        out = scenarios.native_publish(program, calls=cfg.skip_calls, reps=max(50, cfg.copy_reps))
    raw["native_publish"] = out
    python_skip = raw.get("publish_skip")
    entries = [
        Entry(
            "native_publish_skip_ns",
            out["batch_ns_median"],
            "ns",
            params={
                "calls": out["calls"],
                "single_minus_timer_ns": round(out["skip_ns_median"] - out["timer_ns_median"], 1),
                "python_batch_ns": round(python_skip["batch_ns_median"], 1) if python_skip else None,
            },
            notes="doreisa_publish of an unwanted step of a fixed cadence (answered in C, no Python): per call in "
            "batches of 1000 (a single call is below the clock's resolution); python_batch_ns: Bridge.publish "
            "the same way, same run",
        )
    ]
    python_copy = raw.get("publish_copy") or {}
    for name in ("b64k", "b1m"):
        r = out[name]
        py = python_copy.get(name, {}).get("median_ns")
        entries.append(
            Entry(
                "native_publish_copy_ratio_memcpy",
                r["publish_ns_median"] / r["memcpy_ns_median"],
                "x",
                params={
                    "block_bytes": r["nbytes"],
                    "publish_us": round(r["publish_ns_median"] / 1e3, 2),
                    "memcpy_us": round(r["memcpy_ns_median"] / 1e3, 2),
                    "python_publish_us": round(py["publish"] / 1e3, 2) if py else None,
                    "python_ratio_memcpy": round(py["publish"] / py["copyto"], 3) if py else None,
                },
                notes=f"doreisa_publish(wanted) / memcpy into a preallocated buffer, {_size(r['nbytes'])}, "
                "interleaved, medians, the same buffers every time (warm caches: compare publish_us with "
                "python_publish_us, the first call of a burst, cold); python_*: Bridge.publish / np.copyto, same run",
            )
        )
    return entries


def _size(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"


def step_overhead(cfg: Any, raw: dict[str, Any]) -> list[Entry]:
    entries: list[Entry] = []
    raw["step_overhead"] = runs = {}
    for chunk in cfg.step_chunks:
        for ranks in cfg.step_ranks:
            s = scenarios.stepped(ranks=ranks, chunk=chunk, steps=cfg.step_steps, sleep=cfg.step_sleep)
            runs[f"R{ranks}-C{chunk}"] = s
            params = {
                "ranks": ranks,
                "block": f"{chunk}x{chunk}",
                "steps": cfg.step_steps,
                "sleep_s": cfg.step_sleep,
                "oversubscribed": ranks > 2,
            }
            lat = s["latency_ms"]
            check = f"wrong values {s['wrong_values']}, missing results {s['missing_results']}"
            overhead = judged(
                Entry(
                    "step_overhead_ms",
                    lat["median"],
                    "ms",
                    reference=STEP_TARGET_MS,
                    target=f"<= {STEP_TARGET_MS:g} ms median, p90 <= {STEP_P90_TARGET_MS:g} ms",
                    params={**params, "p90_ms": round(lat["p90"], 2), "n": lat["n"], "hops_ms": s["hops_ms"]},
                    notes=f"last block published -> mean recorded; paced steps; {check}; hops_ms: medians of each "
                    "hop (node_poll: post -> node actor copies; node_put: its ray.put; to_head: node -> head call; "
                    "to_driver: head -> driver long poll; driver: bind, compute, record)",
                ),
                at_most=STEP_TARGET_MS,
            )
            overhead.met = overhead.met and lat["p90"] <= STEP_P90_TARGET_MS
            entries += [
                overhead,
                Entry(
                    "step_publish_us",
                    s["publish_us"]["median"],
                    "us",
                    params={**params, "p90_us": round(s["publish_us"]["p90"], 1)},
                    notes="simulation time blocked in publish per wanted step (median over ranks and steps)",
                ),
                Entry(
                    "step_sim_cost_us",
                    s["step_us"]["mean"],
                    "us",
                    params=dict(params),
                    notes="mean cost of one simulation step: fill the block + publish",
                ),
            ]
    return entries


def peer_scenarios(raw: dict[str, Any]) -> list[Entry]:
    """Our runs of the peers' scenarios (compared in comparisons.py once the peers ran)."""
    runs: dict[str, Any] = {}
    common = {"ranks": PEER_RANKS, "steps": PEER_STEPS}
    runs["dense-C256"] = scenarios.stepped(**common, chunk=256, in_flight=NO_BACKPRESSURE)
    runs["dense-C16"] = scenarios.stepped(**common, chunk=16, in_flight=NO_BACKPRESSURE)
    runs["sparse-C256"] = [
        scenarios.stepped(**common, chunk=256, every=10, in_flight=NO_BACKPRESSURE)
        for _ in range(peers.REPEATS["sparse-C256"])
    ]
    runs["dense-C256-default-backpressure"] = scenarios.stepped(**common, chunk=256)
    raw["peer_scenarios"] = runs
    d, dense = runs["dense-C256-default-backpressure"], runs["dense-C256"]
    ingest = dense["put_s_per_block"]
    return [
        Entry(
            "sim_blocked_default_backpressure_ms",
            d["publish_us"]["median"] / 1e3,
            "ms",
            params={**common, "block": "256x256", "max_in_flight": 4},
            notes="publish per wanted step with the default backpressure (the simulation waits for the analytics)",
        ),
        Entry(
            "sim_blocked_p90_ms",
            dense["publish_us"]["p90"] / 1e3,
            "ms",
            params={**common, "block": "256x256", "max_in_flight": NO_BACKPRESSURE},
            notes="p90 of publish per wanted step in the dense 256x256 scenario (the median is compared with the "
            "peers): steps that found no free ring slot, or that the node actor's thread preempted",
        ),
        Entry(
            "node_ingest_ms_per_block",
            None if ingest is None else 1e3 * ingest,
            "ms",
            params={**common, "block": "256x256", "puts_per_block": _rounded(dense["puts_per_block"])},
            notes="node actor's time storing one 512 KiB block in the dense scenario (one serving thread for the "
            "node's 4 ranks, 2 shared cores; the blocks of a step that arrive together are one ray.put): what the "
            "ring's staging absorbs when ranks publish faster",
        ),
    ]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def memory(cfg: Any, raw: dict[str, Any]) -> list[Entry]:
    sampler = scenarios.MemorySampler(period=0.25)
    steps = cfg.memory_steps
    s = scenarios.stepped(ranks=2, chunk=32, steps=steps, sampler=sampler)
    growth = scenarios.memory_growth(sampler, steps)
    raw["memory"] = {"samples": sampler.samples, "store": sampler.store, "growth": growth, "run": s}
    params = {
        "steps": steps,
        "ranks": 2,
        "block": "32x32",
        **{f"{k}_mb": {kk: round(vv, 1) for kk, vv in growth[k].items()} for k in ("driver", "node", "head")},
        "store_hwm_mb": {k: round(v, 1) for k, v in growth["store_hwm"].items()},
        "samples": len(sampler.samples),
    }
    rss = Entry(
        "memory_growth_mb",
        growth["total_rss_growth"],
        "MB",
        reference=MEMORY_TARGET_MB,
        target=f"flat: <= {MEMORY_TARGET_MB:g} MB",
        params=params,
        notes="RSS of driver + node actor + head actor, late (last 15 % of steps) minus early (20-30 %)",
    )
    store = Entry(
        "object_store_growth_mib",
        growth["store"]["growth"],
        "MiB",
        target="flat: <= 1 MiB",
        params={
            "steps": steps,
            **{k: round(v, 1) for k, v in growth["store"].items()},
            "store_hwm_growth_mb": round(growth["store_hwm"]["growth"], 1),
        },
        notes="object store in use (Ray memory summary), late minus early; store_hwm: tmpfs pages of the store",
    )
    slope = Entry(
        "memory_slope_mb_per_1000_steps",
        growth["slope_mb_per_1000_steps"],
        "MB/1000 steps",
        reference=SLOPE_TARGET,
        target=f"flat: <= {SLOPE_TARGET:g}",
        params={"steps": steps, "ranks": 2, "block": "32x32"},
        notes="least-squares slope of driver + node + head RSS over the second half of the steps",
    )
    return [judged(rss, at_most=MEMORY_TARGET_MB), judged(slope, at_most=SLOPE_TARGET), judged(store, at_most=1.0)]

"""Benchmarks that need a multi-node Ray cluster: each runs as its own process (its own Cluster).

``scaling.py``: per-node parts vs one Ray task per Dask task on 1-16 nodes (issue #6).
``placement.py``: in transit vs in situ publish cost, halo bytes vs whole blocks (issue #5).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_common import Entry, judged

HERE = Path(__file__).resolve().parent


def run_script(name: str, quick: bool, timeout: float) -> dict[str, Any]:
    """Run ``benchmarks/NAME --json FILE [--quick]``; its JSON output."""
    with tempfile.TemporaryDirectory(prefix="dbench-") as tmp:
        out = Path(tmp) / "out.json"
        command = [sys.executable, str(HERE / name), "--json", str(out), *(["--quick"] if quick else [])]
        done = subprocess.run(command, timeout=timeout, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"{name} exited with {done.returncode}: {done.stderr[-2000:]}")
        return json.loads(out.read_text())


def scaling(quick: bool, raw: dict[str, Any]) -> list[Entry]:
    data = run_script("scaling.py", quick, timeout=1200)
    raw["scaling"] = data
    entries: list[Entry] = []
    good = [r for r in data["runs"] if "error" not in r]
    for run in data["runs"]:
        if "error" in run:
            entries.append(
                Entry("scheduler_tasks_per_s", None, "tasks/s", params={"nodes": run["nodes"]}, notes=run["error"])
            )
            continue
        parts, stock, prepared = run["parts"], run["stock"], run["prepared"]
        entries.append(
            judged(
                Entry(
                    "scheduler_tasks_per_s",
                    prepared["tasks_per_s"],
                    "tasks/s",
                    reference=stock["tasks_per_s"],
                    target="info: reference = one Ray task per Dask task",
                    params={
                        "nodes": run["nodes"],
                        "blocks": run["blocks"],
                        "dask_tasks": run["dask_tasks"],
                        "ray_tasks": run["ray_tasks_parts"],
                        "prepared_wall_ms": round(prepared["wall_s_median"] * 1e3, 1),
                        "first_step_wall_ms": round(prepared["first_wall_s"] * 1e3, 1),
                        "parts_wall_ms": round(parts["wall_s_median"] * 1e3, 1),
                        "per_task_wall_ms": round(stock["wall_s_median"] * 1e3, 1),
                    },
                    notes="x.sum() over B 16x16 blocks held by per-node actors on a ray Cluster of this machine; "
                    "value: per-node parts with the graph prepared at the first step (doreisa's driver), "
                    "reference: ray_dask_get (one Ray task per Dask task, as doreisa 0.3 / deisa-ray); "
                    "tasks = Dask tasks of the stock graph; ratio > 1 = faster; median of reps after a warm-up",
                )
            )
        )
        entries.append(
            judged(
                Entry(
                    "scheduler_plan_ms",
                    run.get("plan_ms"),
                    "ms",
                    reference=parts["wall_s_median"] * 1e3,
                    target="info: ratio = share of the wall time spent cutting the graph when it is cut every step",
                    params={
                        "nodes": run["nodes"],
                        "blocks": run["blocks"],
                        "dask_tasks": run["dask_tasks"],
                        "prepared_plan_ms": round(prepared["plan_ms"], 2),
                        "first_step_plan_ms": round(prepared["first_plan_ms"], 1),
                    },
                    notes="time partitioned_get spends building the graph's tasks and cutting them into per-node "
                    "parts (record['plan_s']) when it cuts every step, against the wall time of that x.sum(); "
                    "prepared_plan_ms: the same once the cut is reused",
                )
            )
        )
        entries.append(
            judged(
                Entry(
                    "graph_preparation_speedup",
                    parts["wall_s_median"] / prepared["wall_s_median"],
                    "x",
                    target="info: > 1 = preparing the graph once is faster than cutting it every step",
                    params={"nodes": run["nodes"], "blocks": run["blocks"]},
                    notes="wall time of x.sum() with per-node parts cut at every call / with the cut reused "
                    "(placeholders bound to the blocks, parts' tasks kept by the workers)",
                )
            )
        )
    if good:
        top = max(good, key=lambda r: r["nodes"])
        entries.append(
            Entry(
                "scheduler_speedup_vs_per_task",
                top["stock"]["wall_s_median"] / top["prepared"]["wall_s_median"],
                "x",
                params={"nodes": top["nodes"], "blocks": top["blocks"]},
                notes="wall time of one Ray task per Dask task / wall time of per-node parts with the graph "
                "prepared, on the most nodes",
            )
        )
    return entries


def placement(quick: bool, raw: dict[str, Any]) -> list[Entry]:
    data = run_script("placement.py", quick, timeout=900)
    raw["placement"] = data
    entries: list[Entry] = []
    transit = data.get("transit")
    for run in transit if isinstance(transit, list) else [transit] if transit else []:
        if "error" in run:
            entries.append(Entry("in_transit_publish_ratio", None, "x", notes=run["error"]))
            continue
        situ, moved = run["in_situ"], run["in_transit"]
        context = {"ranks": situ.get("ranks"), "block_bytes": situ.get("block_bytes")}
        for mode, r in (("in_situ", situ), ("in_transit", moved)):
            entries.append(
                Entry(
                    "placement_publish_us",
                    r["publish_us_median"],
                    "us",
                    params={**context, "mode": mode, "p90_us": r.get("publish_us_p90"), "steps": r.get("steps")},
                    notes="time a rank spends in publish per wanted step (median over ranks and steps)",
                )
            )
        entries.append(
            Entry(
                "in_transit_publish_ratio",
                moved["publish_us_median"] / situ["publish_us_median"],
                "x",
                params=context,
                target="about 1: one local copy either way",
                notes="publish in transit / publish in situ, same run; the transfer to the analytics node is "
                "off the simulation's path",
            )
        )
    halo = data.get("halo") or {}
    if "error" in halo:
        entries.append(Entry("halo_moved_bytes", None, "B", notes=halo["error"]))
    elif halo:
        entries.append(
            judged(
                Entry(
                    "halo_moved_bytes",
                    halo["stencil_moved_bytes"],
                    "B",
                    reference=halo["gather_block_copies_bytes"],
                    target="ratio << 1",
                    params={
                        "block_bytes": halo.get("block_bytes"),
                        "halo_bytes_theory": halo.get("halo_bytes_theory"),
                        "stencil_block_copies_bytes": halo.get("stencil_block_copies_bytes"),
                        "per_task_stencil_block_copies_bytes": halo.get("stock_stencil_block_copies_bytes"),
                    },
                    notes="bytes sent between nodes by a map_overlap stencil (halo rows + partial sums), "
                    "reference: bytes copied when the same array is gathered as whole blocks",
                )
            )
        )
    return entries

"""Writes ``latest.json``, ``latest-raw.json``, ``latest.md`` and the PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench_common import Entry

CONTEXT_KEYS = ("ranks", "nodes", "block", "block_bytes", "mode", "peer", "scenario", "steps")


def write(folder: Path, entries: list[Entry], raw: dict[str, Any], meta: dict[str, Any]) -> list[Path]:
    """Every output of one run; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "latest.json", folder / "latest-raw.json", folder / "latest.md"]
    paths[0].write_text(json.dumps([e.as_dict() for e in entries], indent=1, default=_plain) + "\n")
    paths[1].write_text(json.dumps({"meta": meta, "raw": raw}, default=_plain) + "\n")
    paths[2].write_text(markdown(entries, meta))
    paths += plots(folder, raw, entries)
    return paths


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table(entries: list[Entry]) -> str:
    """The Markdown table of every entry."""
    lines = [
        "| metric | context | value | unit | target | reference | ratio | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        context = ", ".join(f"{k}={e.params[k]}" for k in CONTEXT_KEYS if k in e.params)
        met = "-" if e.met is None else _fmt(e.met)
        lines.append(
            f"| {e.metric} | {context} | {_fmt(e.value)} | {e.unit} | {e.target or '-'} | "
            f"{_fmt(e.reference)} | {_fmt(e.ratio)} | {met} |"
        )
    return "\n".join(lines)


def markdown(entries: list[Entry], meta: dict[str, Any]) -> str:
    """``latest.md``: run description, the table, then each entry's notes."""
    head = [
        f"# doreisa benchmarks — {meta['mode']} run, {meta['date']}",
        "",
        f"{meta['cores']} cores; wall {meta['wall_s']} s; foreign CPU share during the run "
        f"{100 * meta['foreign_cpu']:.0f} %; load average before {' '.join(meta['loadavg_before'])}, "
        f"after {' '.join(meta['loadavg_after'])}; peers {meta['peers']}.",
        "",
        "Sections: " + "; ".join(meta["sections"]) + ".",
        "",
        table(entries),
        "",
        "## Notes per entry",
        "",
    ]
    for e in entries:
        extra = {k: v for k, v in e.params.items() if k not in CONTEXT_KEYS}
        head.append(f"- **{e.metric}** ({_context(e)}): {e.notes} — {json.dumps(extra, default=_plain)}")
    return "\n".join(head) + "\n"


def _context(e: Entry) -> str:
    return ", ".join(f"{k}={e.params[k]}" for k in CONTEXT_KEYS if k in e.params) or "-"


def plots(folder: Path, raw: dict[str, Any], entries: list[Entry]) -> list[Path]:
    """PNG plots of what this run measured (each skipped if its section failed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for name, draw in (
        ("step_overhead.png", _plot_steps),
        ("publish_copy.png", _plot_copy),
        ("memory.png", _plot_memory),
        ("peers.png", _plot_peers),
        ("scaling.png", _plot_scaling),
    ):
        fig = draw(plt, raw, entries)
        if fig is not None:
            fig.tight_layout()
            fig.savefig(folder / name, dpi=100)
            plt.close(fig)
            out.append(folder / name)
    return out


def _plot_steps(plt: Any, raw: dict[str, Any], entries: list[Entry]) -> Any:
    runs = raw.get("step_overhead")
    if not runs:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for chunk in sorted({int(k.split("-C")[1]) for k in runs}):
        keys = sorted((k for k in runs if k.endswith(f"-C{chunk}")), key=lambda k: int(k[1:].split("-")[0]))
        ranks = [int(k[1:].split("-")[0]) for k in keys]
        med = [runs[k]["latency_ms"]["median"] for k in keys]
        p90 = [runs[k]["latency_ms"]["p90"] for k in keys]
        ax1.errorbar(ranks, med, yerr=[[0] * len(med), [b - a for a, b in zip(med, p90, strict=True)]], marker="o")
        ax1.lines[-1].set_label(f"{chunk}x{chunk} blocks")
        ax2.plot(ranks, [runs[k]["publish_us"]["median"] for k in keys], marker="o", label=f"{chunk}x{chunk}")
    ax1.set(xlabel="ranks", ylabel="ms", title="last publish -> mean recorded (median, bar to p90)", xscale="log")
    ax2.set(xlabel="ranks", ylabel="us", title="publish per wanted step (median)", xscale="log")
    all_ranks = sorted({int(k[1:].split("-")[0]) for k in runs})
    for ax in (ax1, ax2):
        ax.set_xticks(all_ranks, [str(r) for r in all_ranks])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def _plot_copy(plt: Any, raw: dict[str, Any], entries: list[Entry]) -> Any:
    data = raw.get("publish_copy")
    if not data:
        return None
    names = [n for n in data if isinstance(data[n], dict) and "median_ns" in data[n]]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.27
    for i, method in enumerate(("publish", "copyto", "copy")):
        xs = [k + (i - 1) * width for k in range(len(names))]
        ax.bar(xs, [data[n]["median_ns"][method] / 1e3 for n in names], width, label=method)
    ax.set_xticks(range(len(names)), [f"{data[n]['nbytes'] / 2**20:g} MiB" for n in names])
    ax.set(ylabel="us (median)", yscale="log", title="publish (wanted) vs np.copyto vs block.copy()")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return fig


def _plot_memory(plt: Any, raw: dict[str, Any], entries: list[Entry]) -> Any:
    memory = raw.get("memory") or {}
    samples = memory.get("samples")
    if not samples:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.8))
    steps = [s["step"] for s in samples]
    for key, label in (("driver", "driver RSS"), ("node", "node actor RSS"), ("head", "head actor RSS")):
        ax.plot(steps, [s[key] for s in samples], label=label)
    ax.plot(steps, [s["store_hwm"] for s in samples], label="object store tmpfs pages")
    store = memory.get("store") or []
    if store:
        ax.plot([a for a, _ in store], [b for _, b in store], marker=".", label="object store in use (MiB)")
    ax.set(xlabel="last step analysed", ylabel="MB", title="analytics-side memory over the run")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _plot_peers(plt: Any, raw: dict[str, Any], entries: list[Entry]) -> Any:
    rows = [e for e in entries if e.params.get("peer") and e.reference and e.value is not None]
    if not rows:
        return None
    metrics = sorted({e.metric for e in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        these = [e for e in rows if e.metric == metric]
        labels = ["doreisa (this)", *[e.params["peer"] for e in these]]
        values = [these[0].value, *[e.reference for e in these]]
        ax.bar(labels, values, color=["tab:green"] + ["tab:gray"] * len(these))
        ax.set(yscale="log", ylabel="ms", title=metric)
        ax.tick_params(axis="x", rotation=20)
        ax.grid(alpha=0.3, axis="y")
    return fig


def _plot_scaling(plt: Any, raw: dict[str, Any], entries: list[Entry]) -> Any:
    runs = [r for r in (raw.get("scaling") or {}).get("runs", []) if "error" not in r]
    if not runs:
        return None
    nodes = [r["nodes"] for r in runs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    modes = (
        ("stock", "one Ray task per Dask task"),
        ("parts", "per-node parts, cut every step"),
        ("prepared", "per-node parts, prepared (doreisa)"),
    )
    for key, label in modes:
        ax1.plot(nodes, [r[key]["wall_s_median"] * 1e3 for r in runs], marker="o", label=label)
        ax2.plot(nodes, [r[key]["tasks_per_s"] for r in runs], marker="o", label=label)
    blocks = runs[0]["blocks"]
    ax1.set(xlabel="Ray nodes", ylabel="ms", title=f"x.sum() over {blocks} blocks: wall time", yscale="log")
    ax2.set(xlabel="Ray nodes", ylabel="Dask tasks / s", title="scheduler throughput", yscale="log")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(nodes, [str(n) for n in nodes])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend()
    return fig

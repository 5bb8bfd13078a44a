"""The report's figures, drawn with matplotlib's object API on the Agg canvas, returned as PNG bytes.

No ``pyplot``: it holds global state (the current figure, the backend) that a notebook calling
:func:`doreisa.report.write_report` would find changed. matplotlib is imported when a figure is
drawn; :func:`require_matplotlib` says which extra brings it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from doreisa.errors import DoreisaError
from doreisa.report._folder import Change

DPI = 80
#: Scalar panels drawn at most; the others are listed on the page (a page of 500 panels helps nobody).
MAX_PANELS = 24
COLUMNS = 3
#: Cadence changes labelled on each panel at most; beyond, the legend alone names their sources.
MAX_LABELS = 6


def require_matplotlib() -> None:
    """Check that matplotlib can be imported, before anything is read or drawn.

    Raises
    ------
    DoreisaError
        When matplotlib cannot be imported, naming the extra that brings it.
    """
    try:
        import matplotlib.backends.backend_agg
        import matplotlib.figure  # noqa: F401
    except ImportError as exc:
        raise DoreisaError(
            "the report page needs matplotlib, which is not installed here: pip install 'doreisa[plot]'"
        ) from exc


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _source_colors(changes: Sequence[Change]) -> dict[str, str]:
    """One colour per source of change (C0 is the data's)."""
    sources = dict.fromkeys(c.source for c in changes)
    return {source: f"C{1 + i % 9}" for i, source in enumerate(sources)}


def _mark_changes(ax: Any, changes: Sequence[Change], colors: Mapping[str, str], *, label: bool) -> None:
    for change in changes:
        ax.axvline(change.step, color=colors[change.source], linestyle="--", linewidth=0.9)
        if label and len(changes) <= MAX_LABELS:
            ax.text(
                change.step,
                0.98,
                f" {change.source}",
                transform=ax.get_xaxis_transform(),
                rotation=90,
                va="top",
                ha="right",
                fontsize=6,
                color=colors[change.source],
            )


def _legend(figure: Any, changes: Sequence[Change], colors: Mapping[str, str], extra: Sequence[Any] = ()) -> None:
    from matplotlib.lines import Line2D

    handles = [*extra]
    handles += [Line2D([], [], color=c, linestyle="--", label=f"change: {s}") for s, c in colors.items()]
    if handles:
        figure.legend(handles=handles, loc="outside upper center", ncols=min(4, len(handles)), fontsize=8)


def scalar_figure(series: Mapping[str, tuple[np.ndarray, np.ndarray]], changes: Sequence[Change]) -> bytes:
    """One small panel per scalar series (``label: (steps, values)``), cadence changes as vertical lines."""
    labels = list(series)[:MAX_PANELS]
    columns = min(COLUMNS, len(labels))
    rows = math.ceil(len(labels) / columns)
    figure = _figure(4.0 * columns, 0.6 + 2.3 * rows)
    colors = _source_colors(changes)
    axes = figure.subplots(rows, columns, squeeze=False, sharex=True)
    for i, ax in enumerate(axes.flat):
        if i >= len(labels):
            ax.set_visible(False)
            continue
        steps, values = series[labels[i]]
        values = np.where(np.isfinite(values), values, np.nan)
        ax.plot(steps, values, marker="." if len(steps) <= 200 else None, linewidth=1, color="C0")
        if np.isnan(values).all():
            ax.text(0.5, 0.5, "no finite value", transform=ax.transAxes, ha="center", fontsize=8)
        ax.set_title(labels[i], fontsize=9)
        ax.tick_params(labelsize=7)
        _mark_changes(ax, changes, colors, label=True)
        if i >= len(labels) - columns:
            ax.set_xlabel("step", fontsize=8)
    _legend(figure, changes, colors)
    return _png(figure)


def timeline_figure(
    analysed: Mapping[str, Sequence[int]],
    skipped: Mapping[str, Sequence[int]],
    lost: Mapping[str, Sequence[int]],
    changes: Sequence[Change],
) -> bytes:
    """One row per array (or analytic): the steps analysed, skipped by backpressure, and lost."""
    from matplotlib.lines import Line2D

    rows = list(dict.fromkeys([*analysed, *skipped, *lost]))
    figure = _figure(12.0, 1.3 + 0.45 * len(rows))
    ax = figure.subplots()
    kinds = (("analysed", analysed, "|", "C2"), ("skipped", skipped, "x", "C1"), ("lost", lost, "v", "C3"))
    for y, row in enumerate(rows):
        for _, steps, marker, color in kinds:
            if steps.get(row):
                ax.plot(steps[row], [y] * len(steps[row]), marker, color=color, markersize=9, linestyle="none")
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    colors = _source_colors(changes)
    _mark_changes(ax, changes, colors, label=False)
    shown = [
        Line2D([], [], marker=m, color=c, linestyle="none", label=name)
        for name, steps, m, c in kinds
        if any(steps.values())
    ]
    _legend(figure, changes, colors, shown)
    return _png(figure)


def ranks_figure(per_rank: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Per rank: blocks published, skipped and dropped; MiB copied."""
    ranks = sorted(per_rank, key=lambda r: (not r.isdigit(), int(r) if r.isdigit() else 0, r))
    x = np.arange(len(ranks))
    figure = _figure(12.0, 3.2)
    counts, copied = figure.subplots(1, 2, width_ratios=(2, 1))
    width = 0.8 / 3
    for i, key in enumerate(("published", "skipped", "dropped")):
        values = [float(per_rank[r].get(key) or 0) for r in ranks]
        counts.bar(x + (i - 1) * width, values, width, label=key, color=f"C{i}")
    copied.bar(x, [float(per_rank[r].get("bytes_copied") or 0) / 2**20 for r in ranks], 0.8, color="C4")
    for ax, title in ((counts, "blocks per rank"), (copied, "MiB copied per rank")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("rank", fontsize=8)
        ax.tick_params(labelsize=7)
        if len(ranks) <= 32:
            ax.set_xticks(x, ranks)
    counts.legend(fontsize=8)
    return _png(figure)

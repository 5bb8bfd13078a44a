"""``doreisa report RUN_DIR``: the summary table on stdout, and ``RUN_DIR/report.html``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from doreisa.errors import DoreisaError
from doreisa.report._dataset import load
from doreisa.report._figures import require_matplotlib
from doreisa.report._folder import RunFolder, complete_summary, read_run
from doreisa.report._page import render_page

PAGE = "report.html"


def write_report(run_dir: str | os.PathLike[str], html: str | os.PathLike[str] | None = None) -> Path:
    """Write the report page of the run in ``run_dir``; return where it went.

    *Experimental*: what the page shows may change while doreisa is at 0.x.

    One HTML file that needs nothing beside it (the figures are PNG images inside it): the
    summary and every failure, error and warning as tables; every scalar analytic and monitor
    against step (cadence changes drawn as vertical lines, labelled with their source); the
    steps analysed, skipped and lost per array; what each rank published, skipped, dropped
    and copied; the cadence changes of ``provenance.jsonl``; the analytics and their results.

    Parameters
    ----------
    run_dir : str or path
        The folder ``doreisa run --output`` wrote.
    html : str or path, optional
        Where to write the page; default ``RUN_DIR/report.html``.

    Returns
    -------
    Path
        The page written.

    Raises
    ------
    DoreisaError
        When matplotlib is missing (``pip install 'doreisa[plot]'``), or ``run_dir`` is not a
        run folder (or holds a ``summary.json`` or results table that doreisa does not write).
    """
    require_matplotlib()
    run = read_run(run_dir)
    target = Path(html) if html is not None else run.path / PAGE
    loaded = load(run, npy=False)
    try:
        page = render_page(run, loaded)
    finally:
        loaded.dataset.close()
    target.write_text(page, encoding="utf-8")
    return target


def summary_text(run: RunFolder) -> str:
    """The end-of-run table of ``doreisa run``, from the run's ``summary.json`` (of any doreisa version)."""
    from doreisa.runtime.cluster.summary import format_summary

    if run.summary is None:
        text = f"doreisa run summary\n  no summary.json in {run.path}: the run did not finish (killed?)"
    else:
        try:
            text = format_summary(complete_summary(run.summary))
        except (KeyError, TypeError, ValueError, IndexError) as exc:  # a summary.json from another version
            rows = [f"  {key}: {value}" for key, value in run.summary.items() if key != "per_rank"]
            text = "\n".join([f"doreisa run summary (not in the expected form: {exc!r})", *rows])
    return "\n".join([text, *[f"  ? {note}" for note in run.notes]])


def report_from_cli(run_dir: str, *, html: str | None = None, page: bool = True) -> int:
    """``doreisa report``: print the table; write the page unless ``page`` is false; the exit code.

    Without matplotlib the table is still printed, and the command says which extra writes the
    page: exit 0, unless the page was asked for by ``--html``.

    Raises
    ------
    DoreisaError
        For a folder that is not a run folder; without matplotlib when ``html`` is given.
    """
    run = read_run(run_dir)
    print(summary_text(run))
    if not page:
        return 0
    try:
        require_matplotlib()
    except DoreisaError as exc:
        if html is not None:
            raise
        print(f"doreisa report: no {PAGE} written: {exc}", file=sys.stderr)
        return 0
    print(f"report: {write_report(run.path, html)}")
    return 0

"""doreisa report RUN_DIR: the summary table on stdout, the page beside it, and what happens without matplotlib."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from doreisa.cli import main


def test_prints_the_summary_and_writes_the_page(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_dir)]) == 0  # a failed run: the report itself succeeded
    out = capsys.readouterr().out
    assert out.startswith("doreisa run summary\n")
    assert "  status                                 FAILED\n" in out
    assert "  wall time                              12.5 s\n" in out
    assert "  * step 40 (decided at 38, monitor:heat_source): temperature: every 10 steps -> every 5 steps" in out
    assert "  ! corner at step 20: ValueError: bad corner <script>" in out  # a terminal needs no escaping
    assert out.endswith(f"report: {run_dir / 'report.html'}\n")
    assert (run_dir / "report.html").is_file()


def test_no_html_prints_the_table_only(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_dir), "--no-html"]) == 0
    assert "doreisa run summary" in capsys.readouterr().out
    assert not (run_dir / "report.html").exists()


def test_html_names_the_page(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_dir), "--html", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").is_file() and not (run_dir / "report.html").exists()
    with pytest.raises(SystemExit):  # one or the other
        main(["report", str(run_dir), "--html", "x.html", "--no-html"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_an_older_summary_prints(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    old = {k: v for k, v in summary.items() if k not in ("output_failures", "graphs", "warnings", "steps_dropped")}
    (run_dir / "summary.json").write_text(json.dumps(old))
    assert main(["report", str(run_dir), "--no-html"]) == 0
    out = capsys.readouterr().out
    assert "  task graphs cut / reused               0 / 0\n" in out
    assert "  ? summary.json lacks steps_dropped, graphs, output_failures, warnings (written by an older" in out


def test_not_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"doreisa: error: {tmp_path} is not a doreisa run folder: it has none of summary.json")


def test_without_matplotlib_the_table_still_prints(
    run_dir: Path, no_matplotlib: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert "  status                                 FAILED" in captured.out
    assert "no report.html written" in captured.err and "pip install 'doreisa[plot]'" in captured.err
    assert not (run_dir / "report.html").exists()


def test_without_matplotlib_an_explicit_page_fails(
    run_dir: Path, tmp_path: Path, no_matplotlib: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(run_dir), "--html", str(tmp_path / "r.html")]) == 1
    captured = capsys.readouterr()
    assert "doreisa run summary" in captured.out
    assert "doreisa: error: the report page needs matplotlib" in captured.err
    assert not (tmp_path / "r.html").exists()


def test_the_report_never_loads_ray_or_mpi(run_dir: Path) -> None:
    code = (
        f"import sys; from doreisa.cli import main; assert main(['report', {str(run_dir)!r}]) == 0; "
        "print([m for m in ('ray', 'mpi4py', 'doreisa.runtime.rank', 'doreisa.runtime.cluster.session') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.splitlines()[-1] == "[]"
    assert (run_dir / "report.html").is_file()

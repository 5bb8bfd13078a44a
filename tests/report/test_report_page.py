"""report.html: self-contained (PNG figures inline), every name and failure on it, escaped."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from runfolder import CHANGED, LOST, SCRIPT, SKIPPED, STEPS, write_run

from doreisa.errors import DoreisaError
from doreisa.report import write_report
from doreisa.report._dataset import load
from doreisa.report._figures import MAX_PANELS
from doreisa.report._folder import read_run
from doreisa.report._page import timeline_rows
from doreisa.runtime.cluster.results import ResultWriter

PNG = b"\x89PNG\r\n\x1a\n"


def _images(page: str) -> list[tuple[str, bytes]]:
    """The page's images: alt text and decoded PNG data (every src must be inline PNG)."""
    tags = re.findall(r"<img [^>]*>", page)
    found = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(found) == len(tags), "an image that is not inline PNG"
    return [(alt, base64.b64decode(data, validate=True)) for alt, data in found]


def test_the_page_has_one_png_per_figure_and_names_everything(run_dir: Path) -> None:
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text()
    images = _images(page)
    assert [alt for alt, _ in images] == [
        "3 scalar results against step",
        "steps analysed, skipped and lost",
        "blocks published, skipped and dropped, and MiB copied, per rank",
    ]
    assert all(data.startswith(PNG) for _, data in images)
    for name in ("mean_T", "max_T", "monitor:max(temperature)", "T_histogram", "corner", "monitor:heat_source"):
        assert name in page
    assert 'src="http' not in page and "<link" not in page and "<script" not in page  # nothing outside the file
    assert "bad corner &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page  # the analytic failure
    assert "store refused a block &lt;script&gt;" in page  # the rank's error
    assert "<td>netcdf</td><td>3</td><td>OutputError: disk full</td>" in page
    assert "analytic trend was never called" in page
    assert "temperature: every 10 steps -&gt; every 5 steps" in page
    assert "<td>RankError</td>" in page
    assert "<td>temperature</td><td>10</td><td>1</td><td>1</td>" in page  # analysed, skipped, lost


def test_the_timeline_has_each_array_analysed_skipped_and_lost(run_dir: Path) -> None:
    run = read_run(run_dir)
    loaded = load(run, npy=False)
    analysed, skipped, lost = timeline_rows(loaded, run, run.summary)
    assert analysed == {"temperature": STEPS}  # the analytics of temperature, from the run's contract.yaml
    assert (skipped, lost) == ({"temperature": [SKIPPED]}, {"temperature": [LOST]})
    assert [c.step for c in run.changes] == [CHANGED]


def test_the_page_goes_where_it_is_asked(run_dir: Path, tmp_path: Path) -> None:
    assert write_report(run_dir, tmp_path / "elsewhere.html") == tmp_path / "elsewhere.html"
    assert (tmp_path / "elsewhere.html").read_text().startswith("<!DOCTYPE html>")
    assert not (run_dir / "report.html").exists()


def test_panels_beyond_the_limit_are_listed(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, ("csv",))
    labels = [f"a{i:02d}" for i in range(MAX_PANELS + 2)]
    for step in range(3):
        for i, label in enumerate(labels):
            writer.record(label, step, None, float(i * step))
    writer.close()
    page = write_report(tmp_path).read_text()
    assert _images(page)[0][0] == f"{MAX_PANELS} scalar results against step"
    assert f"doreisa.open_run reads them all): {labels[-2]}, {labels[-1]}</p>" in page


def test_a_killed_run_without_a_summary_still_has_a_page(tmp_path: Path) -> None:
    write_run(tmp_path, ("csv",))
    (tmp_path / "summary.json").unlink()
    page = write_report(tmp_path).read_text()
    assert "no summary" in page and "no summary.json: the run did not finish" in page
    assert len(_images(page)) == 2  # scalars and steps; no rank closed as far as anyone knows


def test_an_older_summary_still_makes_a_page(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("output_failures", "cadence_changes", "warnings", "per_rank", "graphs"):
        del summary[key]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    page = write_report(run_dir).read_text()
    assert "summary.json lacks graphs, output_failures, cadence_changes, warnings, per_rank" in page
    assert "No rank closed its bridge" in page and "bad corner &lt;script&gt;" in page


def test_without_matplotlib_the_page_names_the_extra(run_dir: Path, no_matplotlib: None) -> None:
    with pytest.raises(
        DoreisaError, match=r"needs matplotlib, which is not installed here: pip install 'doreisa\[plot\]'"
    ):
        write_report(run_dir)
    assert not (run_dir / "report.html").exists()


def test_no_raw_text_from_the_run_reaches_the_page(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, ("csv",))
    writer.record(f"x{SCRIPT}", 0, None, np.float64(1.0))
    writer.close()
    page = write_report(tmp_path).read_text()
    assert SCRIPT not in page and "x&lt;script&gt;" in page

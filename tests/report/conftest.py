"""A run folder for each test that wants one (see runfolder.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from runfolder import write_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    write_run(tmp_path / "out")
    return tmp_path / "out"


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib as if it were not installed: importing it raises ImportError."""
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)

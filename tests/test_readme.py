"""The README as a user reads it: its shell commands run verbatim, and its snippets are the real files.

Every line of every ``bash`` block must be known here: run (the quickstart, from a folder
like a fresh clone with a shell ``PATH`` that does not hold doreisa's Python), checked another
way (``pip install``: the extras exist; ``module load``: a site's command), or covered by
another test (``make demo``, ``make test``). A new command in the README fails this test until
it is handled.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
HERE = str(Path(sys.executable).parent)


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _commands() -> list[str]:
    """Every command of the bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


COVERED = {
    "make demo": "tests/runtime/test_examples_heat.py::test_main_demo_runs_and_plots",
    "make test": "this test suite",
    "module load openmpi": "a site's environment module: nothing to run here",
}


def _extras() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def _check_pip(command: str) -> None:
    """``pip install`` lines: what they name exists (running them would change this environment)."""
    args = shlex.split(command)[2:]
    for arg in args:
        extras = re.fullmatch(r"\.(?:\[(.*)\])?", arg)
        if extras:
            assert set(filter(None, (extras.group(1) or "").split(","))) <= _extras(), arg
        else:
            assert arg in ("--no-binary", "mpi4py"), f"README: pip install {arg!r} is not checked"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that looks like a fresh clone after ``make``: the examples and the .venv."""
    folder = tmp_path_factory.mktemp("clone")
    (folder / "examples").symlink_to(ROOT / "examples")
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


def test_every_readme_command_is_known() -> None:
    commands = _commands()
    assert commands, "the README has shell blocks"
    unknown = [c for c in commands if c not in COVERED and not c.startswith(("pip install", ".venv/bin/doreisa"))]
    assert not unknown, f"README commands this test does not run or check: {unknown}"
    assert "make demo" in commands and "make test" in commands, "the two set-up commands"


def test_pip_install_lines_name_real_extras() -> None:
    lines = [c for c in _commands() if c.startswith("pip install")]
    assert lines
    for line in lines:
        _check_pip(line)


@pytest.mark.ray
@pytest.mark.mpi
@pytest.mark.slow
def test_quickstart_commands_run_verbatim(clone: Path) -> None:
    # the shell's PATH without doreisa's Python: `-- python ...` must still find the one with mpi4py
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != HERE)
    env = {**os.environ, "PATH": path}
    ran = 0
    for command in _commands():
        if command.startswith(".venv/bin/doreisa"):
            proc = subprocess.run(command, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
            ran += 1
    assert ran >= 2
    out = clone / "out" / "heat"
    summary: dict[str, Any] = yaml.safe_load((out / "summary.json").read_text())
    assert summary["ok"] and summary["steps_analysed"] == {"temperature": 20}
    assert "max_dTdt" in (out / "results.csv").read_text()


def _subset(small: Any, large: Any) -> bool:
    """``small`` says nothing ``large`` does not: mappings by key, lists item by item in any order."""
    if isinstance(small, dict) and isinstance(large, dict):
        return all(k in large and _subset(v, large[k]) for k, v in small.items())
    if isinstance(small, list) and isinstance(large, list):
        return all(any(_subset(s, item) for item in large) for s in small)
    return small == large


def test_readme_contract_is_an_excerpt_of_the_real_file() -> None:
    (snippet,) = _blocks("yaml")
    real = yaml.safe_load((ROOT / "examples" / "heat" / "contract.yaml").read_text())
    shown = yaml.safe_load(snippet)
    assert _subset(shown, real), "the README's contract says something examples/heat/contract.yaml does not"
    assert shown["arrays"] == real["arrays"] and shown["cadence"] == real["cadence"]


def test_readme_python_snippets_are_in_the_example_files() -> None:
    sources = "".join((ROOT / "examples" / "heat" / name).read_text() for name in ("simulation.py", "analytics.py"))
    code = re.sub(r"\s+", " ", sources)
    for block in _blocks("python"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line and line != "..." and not line.startswith(("...", "#")):
                assert re.sub(r"\s+", " ", line) in code, f"README line not in examples/heat: {line!r}"

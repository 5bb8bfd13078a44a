"""Before Ray starts: the launcher exists, the simulation's Python loads MPI, and ``python`` is doreisa's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from doreisa.errors import DoreisaError
from doreisa.runtime.cluster.preflight import check_launch, find_mpiexec, simulation_env

HERE = str(Path(sys.executable).parent)
BARE_PATH = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != HERE) or os.defpath


def test_python_on_the_simulations_path_is_the_one_doreisa_runs_in() -> None:
    env = simulation_env({"PATH": f"/usr/bin{os.pathsep}{HERE}{os.pathsep}/bin", "OTHER": "kept"})
    assert env["PATH"].split(os.pathsep) == [HERE, "/usr/bin", "/bin"]
    assert env["OTHER"] == "kept"
    out = subprocess.run(["python", "-c", "import sys; print(sys.executable)"], env=env, capture_output=True, text=True)
    assert Path(out.stdout.strip()).parent == Path(HERE)


def test_a_launcher_that_does_not_exist_is_named() -> None:
    with pytest.raises(DoreisaError, match=r"--mpiexec 'no-such-srun -N 2': no program 'no-such-srun'"):
        find_mpiexec("no-such-srun -N 2")
    assert find_mpiexec(f"{sys.executable} -X dev") == f"{sys.executable} -X dev", "options are kept"


def test_the_simulations_python_is_checked_for_mpi(tmp_path: Path) -> None:
    env = simulation_env({"PATH": BARE_PATH})
    assert check_launch(["python", "sim.py"], None, env) == find_mpiexec(None)
    broken = tmp_path / "mpi4py"  # what an mpi4py wheel without an MPI library does at import
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('cannot load MPI library libmpi.so.12')\n")
    with pytest.raises(DoreisaError) as info:
        check_launch(["python3", "sim.py"], None, {**env, "PYTHONPATH": str(tmp_path)})
    message = str(info.value)
    assert "cannot load MPI through mpi4py: ImportError: cannot load MPI library libmpi.so.12" in message
    assert "pip install 'doreisa[mpich]'" in message and "pip install --no-binary mpi4py mpi4py" in message


def test_a_simulation_program_that_is_nowhere_is_named() -> None:
    with pytest.raises(DoreisaError, match=r"the simulation's program 'no_such_sim' is not a file, nor on PATH"):
        check_launch(["no_such_sim", "--steps", "3"], None, {"PATH": BARE_PATH})


def test_a_program_that_is_not_python_is_not_imported_from(tmp_path: Path) -> None:
    script = tmp_path / "sim.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert check_launch([str(script)], None, {"PATH": BARE_PATH}) == find_mpiexec(None)


def test_doreisa_run_stops_before_ray_when_mpi_cannot_load(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    (fake / "mpi4py").mkdir(parents=True)
    (fake / "mpi4py" / "__init__.py").write_text("raise ImportError('cannot load MPI library')\n")
    contract = tmp_path / "contract.yaml"
    contract.write_text("arrays:\n  t: {dtype: float64, shape: [4]}\nanalytics:\n  - {function: mean, arrays: [t]}\n")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "doreisa.cli", "run", str(contract), "--np", "2", "--output", str(out)]
    proc = subprocess.run(
        [*argv, "--", "python", "sim.py"],
        env={**os.environ, "PYTHONPATH": str(fake)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "cannot load MPI through mpi4py: ImportError: cannot load MPI library" in proc.stderr
    assert not out.exists(), "nothing started, nothing written"


def test_a_bad_energy_factor_stops_doreisa_run_before_anything_starts(tmp_path: Path) -> None:
    contract = tmp_path / "contract.yaml"
    contract.write_text("arrays:\n  t: {dtype: float64, shape: [4]}\nanalytics:\n  - {function: mean, arrays: [t]}\n")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "doreisa.cli", "run", str(contract), "--output", str(out), "--", "python", "x.py"]
    proc = subprocess.run(
        argv, env={**os.environ, "DOREISA_CARBON_G_PER_KWH": "high"}, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and "$DOREISA_CARBON_G_PER_KWH must be a positive number, got 'high'" in proc.stderr
    assert not out.exists()

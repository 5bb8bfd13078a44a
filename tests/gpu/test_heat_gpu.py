"""The heat example on a GPU under ``doreisa run``: the CuPy simulation analyses the same steps and values as the
numpy one, with its analytics on the CPU and on the GPU (``placement: {device: gpu}``) (issue #18).

Skipped without CuPy or a CUDA device (tests/conftest.py); starts Ray and mpiexec.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.ray, pytest.mark.mpi, pytest.mark.slow]

HEAT = Path(__file__).parents[2] / "examples" / "heat"
STEPS = 61  # analysed: 0, 10, ..., 60
OUTPUTS = "outputs: {formats: [csv, npy]}\n"


def _run(tmp_path: Path, name: str, simulation: str, extra: str = "") -> Path:
    contract = tmp_path / f"{name}.yaml"
    contract.write_text((HEAT / "contract.yaml").read_text() + OUTPUTS + extra)
    out = tmp_path / name
    doreisa = Path(sys.executable).parent / "doreisa"
    command = [str(doreisa), "run", str(contract), "--np", "4", "--output", str(out), "--quiet"]
    command += ["--analytics", str(HEAT / "analytics.py"), "--", sys.executable, str(HEAT / simulation)]
    proc = subprocess.run([*command, "--steps", str(STEPS)], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"], summary
    return out


def _values(out: Path) -> dict[tuple[str, int], object]:
    """Every result: a scalar from results.csv, an array from its .npy file."""
    found: dict[tuple[str, int], object] = {}
    with (out / "results.csv").open() as f:
        for row in csv.DictReader(f):
            key = (row["analytic"], int(row["step"]))
            found[key] = float(row["value"]) if row["value"] else np.load(out / row["file"].split(";")[0])
    return found


def _compare(got: dict[tuple[str, int], object], want: dict[tuple[str, int], object], rtol: float) -> int:
    """Same results, the same steps; how many are bit for bit the same."""
    assert sorted(got) == sorted(want), "the same analytics at the same steps"
    exact = 0
    for key, value in want.items():
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(value), rtol=rtol, err_msg=str(key))
        exact += bool(np.array_equal(np.asarray(got[key]), np.asarray(value)))
    return exact


def test_cupy_heat_analyses_the_same_steps_and_values_as_numpy(tmp_path: Path) -> None:
    cpu = _values(_run(tmp_path, "numpy", "simulation.py"))
    assert {s for _, s in cpu} == set(range(0, STEPS, 10))
    gpu_sim = _values(_run(tmp_path, "cupy", "simulation_gpu.py"))
    # same arithmetic, one operation per kernel: the fields agree to the last bit, or within rounding
    exact = _compare(gpu_sim, cpu, rtol=1e-12)
    print(f"cupy simulation, analytics on the CPU: {exact} of {len(cpu)} results bit for bit equal")
    on_gpu = _values(_run(tmp_path, "cupy-gpu-analytics", "simulation_gpu.py", "placement: {device: gpu}\n"))
    # reductions on the GPU add in another order
    exact = _compare(on_gpu, cpu, rtol=1e-9)
    print(f"cupy simulation, analytics on the GPU: {exact} of {len(cpu)} results bit for bit equal")

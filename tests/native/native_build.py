"""Building against the C API as a user does: ``doreisa native`` for the flags, the MPI wrappers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[2]


def tool_env(native_dir: Path) -> dict[str, str]:
    """PATH with this venv's bin first (doreisa, mpicc), the library built in a test folder."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DOREISA_NATIVE_DIR": str(native_dir)}


def flags(env: dict[str, str], *which: str) -> list[str]:
    out = subprocess.run([str(BIN / "doreisa"), "native", *which], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def compile_c(env: dict[str, str], source: Path, out: Path, *, cxx: bool = False) -> Path:
    """``mpicc $(doreisa native --cflags) SOURCE $(doreisa native --libs)``, warnings as errors."""
    compiler = "mpicxx" if cxx else "mpicc"
    extra = ["-std=c++17"] if cxx else []
    command = [compiler, *extra, "-O2", "-Wall", "-Werror", *flags(env, "--cflags"), "-o", str(out), str(source)]
    done = subprocess.run([*command, *flags(env, "--libs")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


HEAT = ROOT / "examples" / "heat"
#: the same run in every language: 30 steps (analysed: 0, 10, 20 and their windows), a heat source on
HEAT_ARGS = ["--steps", "30", "--source", "5:25"]


def doreisa_run(env: dict[str, str], output: Path, nranks: int, command: list[str]) -> dict[tuple[str, int], object]:
    """``doreisa run`` of the heat contract and analytics; the results as {(analytic, step): value or array}."""
    import numpy as np
    import pandas as pd

    argv = [str(BIN / "doreisa"), "run", str(HEAT / "contract.yaml"), "--np", str(nranks), "--output", str(output)]
    argv += ["--quiet", "--analytics", str(HEAT / "analytics.py"), "--", *command]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    table = pd.read_csv(output / "results.csv")
    return {
        (row.analytic, int(row.step)): np.load(output / row.file) if isinstance(row.file, str) else float(row.value)
        for row in table.itertuples()
    }


def assert_same_results(got: dict[tuple[str, int], object], want: dict[tuple[str, int], object]) -> None:
    """Same analytics at the same steps, values equal up to the rounding of exp() and of sum orders."""
    import numpy as np

    assert sorted(got) == sorted(want)
    for key, value in want.items():
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(value), rtol=1e-12, atol=1e-9, err_msg=str(key))

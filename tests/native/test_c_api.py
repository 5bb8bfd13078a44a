"""The C and C++ API (doreisa.h, doreisa.hpp): built with `doreisa native`, run on real MPI ranks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from native_build import BIN, HEAT_ARGS, ROOT, assert_same_results, compile_c, doreisa_run

from doreisa.testing import run_coupled

HERE = Path(__file__).parent

ERRORS_CONTRACT = """
arrays:
  field: {dtype: float64, shape: [4, 6]}
cadence: {every: 5}
analytics:
  - {function: max, arrays: [field]}
"""


def _cases(output: str) -> dict[str, tuple[int, int, str]]:
    """errors.c's lines "CASE CODE OUT MESSAGE" as {case: (code, out, message)} (the last line of a case)."""
    cases = {}
    for line in output.splitlines():
        name, *rest = line.split(" ", 3)
        if len(rest) >= 2 and rest[0].lstrip("-").isdigit():
            cases[name] = (int(rest[0]), int(rest[1]), rest[2] if len(rest) > 2 else "")
    return cases


def test_native_command_builds_once_and_prints_flags(tmp_path: Path) -> None:
    doreisa = str(BIN / "doreisa")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    built = subprocess.run([doreisa, "native", "--dir", str(tmp_path)], env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    library = tmp_path / "libdoreisa.so"
    assert built.stdout.strip() == str(library) and library.stat().st_size > 0
    first = library.stat().st_mtime_ns
    flags = subprocess.run(
        [doreisa, "native", "--dir", str(tmp_path), "--cflags", "--libs"], env=env, capture_output=True, text=True
    )
    include = ROOT / "doreisa" / "native" / "include"
    assert flags.stdout.split() == [f"-I{include}", f"-L{tmp_path}", f"-Wl,-rpath,{tmp_path}", "-ldoreisa"]
    assert library.stat().st_mtime_ns == first, "up to date: not rebuilt"
    pc = (tmp_path / "pkgconfig" / "doreisa.pc").read_text()
    assert f"Cflags: -I{include}\n" in pc and f"Libs: -L{tmp_path} -Wl,-rpath,{tmp_path} -ldoreisa\n" in pc
    assert (include / "doreisa.h").exists() and (include / "doreisa.hpp").exists()
    fortran = subprocess.run([doreisa, "native", "--dir", str(tmp_path), "--fortran"], env=env, capture_output=True)
    assert Path(fortran.stdout.decode().strip()).name == "doreisa.f90"

    bad = subprocess.run([doreisa, "native", "--dir", str(tmp_path / "x"), "--cc", "/no/mpicc"], capture_output=True)
    assert bad.returncode == 1
    assert b"doreisa: error: C compiler '/no/mpicc' not found" in bad.stderr


def test_create_without_a_runtime_or_without_doreisa_returns_a_code(native_env: dict[str, str], tmp_path: Path) -> None:
    """Outside `doreisa run`, or in a Python without doreisa: a code and a message, the program goes on."""
    program = compile_c(native_env, HERE / "errors.c", tmp_path / "errors")
    env = {k: v for k, v in native_env.items() if not k.startswith("DOREISA_RUN")}
    alone = subprocess.run([str(program)], env=env, capture_output=True, text=True, timeout=60)
    assert alone.returncode == 0, alone.stderr
    assert _cases(alone.stdout)["create"] == (
        -4,
        0,
        "no doreisa runtime: $DOREISA_RUN_DIR is not set. Start the simulation with "
        "`doreisa run CONTRACT --np N --output DIR -- COMMAND`, or pass run_dir=",
    )
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "empty")], check=True)
    env["DOREISA_PYTHON"] = str(tmp_path / "empty" / "bin" / "python")
    other = subprocess.run([str(program)], env=env, capture_output=True, text=True, timeout=60)
    code, _, message = _cases(other.stdout)["create"]
    assert code == -6 and "No module named 'doreisa'" in message and "set DOREISA_PYTHON" in message


@pytest.mark.ray
@pytest.mark.mpi
def test_c_bad_input_gets_the_python_errors_as_codes(
    ray_cluster: Any, native_env: dict[str, str], tmp_path: Path
) -> None:
    program = compile_c(native_env, HERE / "errors.c", tmp_path / "errors")
    run = run_coupled(ERRORS_CONTRACT, [str(program)], nranks=1, env=native_env)
    assert run.returncode == 0, run.output
    cases = _cases(run.output)
    assert cases["first"] == (0, 1, "")
    assert cases["unknown_dtype"] == (
        -1,
        0,
        "doreisa_publish(field): unknown dtype code 99; use DOREISA_FLOAT64 (1) ... DOREISA_UINT8 (10)",
    )
    assert cases["wrong_dtype"] == (
        -2,
        0,
        "rank 0: array 'field' step 5: block dtype is float32; the contract says float64",
    )
    assert cases["wrong_shape"][:2] == (-2, 0) and "block shape (3, 6) differs" in cases["wrong_shape"][2]
    assert cases["unknown_array"] == (-2, 0, "rank 0: array 'nope' is not in the contract; known arrays: ['field']")
    assert cases["null_data"] == (-1, 0, "doreisa_publish(field): data is NULL")
    assert cases["ndim"][0] == -1 and cases["negative_stride"] == (
        -1,
        0,
        "doreisa_publish(field): strides[0] is -6; strides are >= 0",
    )
    assert cases["moved_offset"][:2] == (-2, 0) and "offset (1, 0) differs" in cases["moved_offset"][2]
    assert cases["step_order"] == (-2, 0, "rank 0: array 'field' step 38 after step 40; steps must increase")
    assert cases["same_step"][0] == -2, "the step the C fast path saw last is checked too"
    assert cases["wants45"] == (0, 1, "") and cases["wants46"] == (0, 0, "")
    assert cases["feedback"] == (0, 0, ""), "no steering value sent: not found"
    assert cases["null_bridge"] == (-1, 0, "doreisa_publish: bridge is NULL")
    assert cases["close"] == (0, 0, "")
    # 36 publish calls on a bridge, all counted; 6 copies of 4x6 float64 (steps 0, 20, 25, 30, 35, 40)
    assert "counts 32 6 1152 0 0 0" in run.output.splitlines()
    assert run.values["max"] == {0: 23.0, **{s: 100.0 * s + 23 for s in (20, 25, 30, 35, 40)}}


@pytest.mark.ray
@pytest.mark.mpi
def test_cpp_wrapper_publishes_strided_views_and_throws(
    ray_cluster: Any, native_env: dict[str, str], tmp_path: Path
) -> None:
    program = compile_c(native_env, HERE / "bridge.cpp", tmp_path / "bridge", cxx=True)
    contract = "arrays:\n  field: {dtype: float64, shape: [8, 12]}\n"
    contract += "  zone: {of: field, select: [{start: 2, stop: 6}, {start: 3, stop: 9}], cadence: {every: 2}}\n"
    contract += "cadence: {every: 3}\n"
    contract += "analytics:\n  - {function: max, arrays: [field]}\n  - {function: mean, arrays: [field]}\n"
    contract += "  - {function: max, name: zone_max, arrays: [zone]}\n"
    run = run_coupled(contract, [str(program)], nranks=2, env=native_env)
    assert run.returncode == 0, run.output
    for rank in (0, 1):
        assert f"rank {rank} wants(10)=1 wants(12)=1 feedback=0" in run.output, "10: the view wants it"
        assert (
            f"rank {rank} error -2: rank {rank}: array 'field' step 5 after step 9; steps must increase" in run.output
        )
        # steps 0, 3, 6, 9 of the array and 0, 2, 4, 6, 8 of its view: the C fast path skips only step 1 and 5
        assert f"rank {rank} copied 7 calls 11 published 9" in run.output
    assert run.values["max"] == {s: 1000.0 * s + 95 for s in (0, 3, 6, 9)}
    assert run.values["mean"] == {s: 1000.0 * s + 47.5 for s in (0, 3, 6, 9)}
    assert run.values["zone_max"] == {s: 1000.0 * s + 68 for s in (0, 2, 4, 6, 8)}, "row 5, column 8"


@pytest.mark.ray
@pytest.mark.mpi
@pytest.mark.slow
def test_heat_in_c_analyses_the_same_steps_and_values_as_python(
    native_env: dict[str, str], heat_reference: dict[tuple[str, int], object], tmp_path: Path
) -> None:
    """examples/heat_c built with its Makefile, as a user does, under `doreisa run` with the heat contract."""
    source = tmp_path / "heat_c"
    shutil.copytree(ROOT / "examples" / "heat_c", source)
    made = subprocess.run(["make", "-C", str(source)], env=native_env, capture_output=True, text=True)
    assert made.returncode == 0, made.stdout + made.stderr
    got = doreisa_run(native_env, tmp_path / "out", 4, [str(source / "heat"), *HEAT_ARGS])
    assert_same_results(got, heat_reference)
    assert {step for _, step in got} == {0, 10, 20}


@pytest.mark.ray
@pytest.mark.mpi
@pytest.mark.slow
def test_heat_in_fortran_on_a_non_square_grid_matches_python(
    native_env: dict[str, str], heat_reference: dict[tuple[str, int], object], tmp_path: Path
) -> None:
    """examples/heat_fortran on 6 ranks (3 x 2 blocks of uneven sizes, x first in memory) vs Python on 4 (2 x 2).

    The mpich wheel has no Fortran MPI: the example's `use mpi` is tests/native/mpi_shim.f90 here.
    """
    if shutil.which("gfortran") is None:
        pytest.skip("no gfortran: `apt-get install gfortran` (.ci/run does it where it can)")
    source = tmp_path / "heat_fortran"
    shutil.copytree(ROOT / "examples" / "heat_fortran", source)
    shim = f"MPI_SHIM={HERE / 'mpi_shim.f90'}"
    made = subprocess.run(
        ["make", "-C", str(source), "FC=gfortran", shim], env=native_env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stdout + made.stderr
    got = doreisa_run(native_env, tmp_path / "out", 6, [str(source / "heat"), *HEAT_ARGS])
    assert_same_results(got, heat_reference)

"""The C API's tests build with a library of their own (``$DOREISA_NATIVE_DIR`` in a test folder)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator

import pytest
from native_build import BIN, HEAT, HEAT_ARGS, doreisa_run, tool_env


@pytest.fixture(scope="session")
def native_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if shutil.which("mpicc", path=f"{BIN}{os.pathsep}{os.environ['PATH']}") is None:
        pytest.skip("no mpicc: install doreisa[mpich] or a site MPI")
    yield tool_env(tmp_path_factory.mktemp("native"))


@pytest.fixture(scope="session")
def heat_reference(
    native_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, int], object]:
    """The Python heat example's results, 4 ranks, 30 steps: what the C and Fortran ports must reproduce."""
    out = tmp_path_factory.mktemp("heat_python")
    return doreisa_run(native_env, out, 4, [sys.executable, str(HEAT / "simulation.py"), *HEAT_ARGS])

"""What ``doreisa run`` checks before it starts Ray: the MPI launcher, and that the simulation's
Python can load MPI. Each failure names its fix; none of them costs a Ray start to find.
Once Ray is up, before any actor or rank starts: that the cluster has what the contract's
placement asks for (:func:`check_devices`).

It also gives the simulation the environment a user expects: the folder of the Python that runs
``doreisa`` first on ``PATH`` (as ``conda run`` does), so that ``-- python sim.py`` runs the
interpreter doreisa is installed in, with its mpi4py, whatever the shell's ``PATH`` says.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from doreisa.contract import Contract
from doreisa.errors import ContractError, DoreisaError

#: Seconds the simulation's Python may take to import mpi4py and load MPI (a cold shared file system is slow).
IMPORT_TIMEOUT = 120
#: How to get MPI, for the messages.
MPI_FIX = (
    "on a laptop or in CI: pip install 'doreisa[mpich]' (MPI and mpiexec as wheels); on a cluster: load the site's "
    "MPI (module load ...), then pip install --no-binary mpi4py mpi4py so that mpi4py is built against it"
)
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")


def find_mpiexec(explicit: str | None) -> str:
    """The MPI launcher: ``explicit`` (may hold options: "mpirun --oversubscribe", "srun"), else the one
    beside this Python (the mpich wheel), else PATH.

    Raises
    ------
    DoreisaError
        When there is none, or ``explicit`` names a program that does not exist.
    """
    if explicit:
        program = shlex.split(explicit)[0]
        if shutil.which(program) is None:
            raise DoreisaError(f"--mpiexec {explicit!r}: no program {program!r} (not a file, not on PATH)")
        return explicit
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if found is None:
        raise DoreisaError(
            f"no mpiexec found (beside {sys.executable}, or on PATH). Install MPI: {MPI_FIX}; or pass --mpiexec"
        )
    return found


def simulation_env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with the folder of this Python first on ``PATH``."""
    here = str(Path(sys.executable).parent)
    parts = [p for p in base.get("PATH", os.defpath).split(os.pathsep) if p and p != here]
    return {**base, "PATH": os.pathsep.join([here, *parts])}


def check_launch(command: list[str], mpiexec: str | None, env: Mapping[str, str]) -> str:
    """The launcher to use, once it and the simulation's MPI are known to work.

    When the simulation is a Python program (``python``, ``python3.12``, or a path to one), that
    Python must import ``mpi4py.MPI``: a wheel of mpi4py without an MPI library fails only there,
    and otherwise every rank would fail after Ray had started.

    Raises
    ------
    DoreisaError
        Naming what is missing and how to install it.
    """
    launcher = find_mpiexec(mpiexec)
    if not command:
        return launcher
    program = shutil.which(command[0], path=env.get("PATH"))
    if program is None:
        raise DoreisaError(f"the simulation's program {command[0]!r} is not a file, nor on PATH ({env.get('PATH')})")
    if _PYTHON.match(Path(command[0]).name):
        _check_mpi4py(program, env)
    return launcher


def _check_mpi4py(python: str, env: Mapping[str, str]) -> None:
    try:
        done = subprocess.run(
            [python, "-c", "from mpi4py import MPI"],
            env={**env, "MPI4PY_RC_INITIALIZE": "0"},  # load the library only: a singleton MPI_Init can hang
            capture_output=True,
            text=True,
            timeout=IMPORT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise DoreisaError(
            f"the simulation's Python ({python}) did not import mpi4py in {IMPORT_TIMEOUT} s; is its file system slow?"
        ) from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no message)"]
        raise DoreisaError(f"the simulation's Python ({python}) cannot load MPI through mpi4py: {lines[-1]}. {MPI_FIX}")


def gpu_keys(contract: Contract) -> list[str]:
    """The contract's keys that place an array's analytics on a GPU (``placement.device: gpu``)."""
    keys: list[str] = []
    for name, spec in contract.arrays.items():
        if contract.placement_of(name).device == "gpu":
            key = "placement.device" if spec.placement is None else f"arrays.{name}.placement.device"
            if key not in keys:
                keys.append(key)
    return keys


def check_devices(contract: Contract, resources: Mapping[str, float], *, cupy: bool | None = None) -> None:
    """Refuse a contract that asks for GPUs the cluster lacks, before the simulation starts.

    Parameters
    ----------
    contract : Contract
        The run's contract.
    resources : mapping
        The cluster's resources, as ``ray.cluster_resources()`` gives them (``"GPU"``: how many).
    cupy : bool, optional
        Whether CuPy is importable; default: looked up (without importing it).

    Raises
    ------
    ContractError
        Naming the keys that ask for a GPU, and what to do.
    """
    keys = gpu_keys(contract)
    if not keys:
        return
    asked = " and ".join(f"{k}: gpu" for k in keys)
    if resources.get("GPU", 0) <= 0:
        raise ContractError(
            f"{asked}: the analytics' parts would run on GPU Ray workers, but the Ray cluster has no GPU "
            f"(CPU: {resources.get('CPU', 0):g}, GPU: 0). Run on nodes with a GPU (Ray finds them; with an "
            "existing cluster: ray start --num-gpus=N), or set device: cpu"
        )
    if cupy is None:
        cupy = importlib.util.find_spec("cupy") is not None
    if not cupy:
        raise ContractError(
            f"{asked}: the analytics' parts run with CuPy, which is not installed: pip install 'doreisa[gpu]'"
        )

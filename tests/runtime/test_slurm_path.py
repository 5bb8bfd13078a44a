"""The path a SLURM job takes, on one machine: ``examples/slurm/run.sbatch`` as it is, run by bash.

Only SLURM itself is played: ``scontrol`` lists the job's nodes (this machine, twice) and
``srun`` runs its command (``-n N COMMAND`` through mpiexec, as srun starts MPI ranks). The
rest is real and separate, as on a cluster: ``ray start --head`` and ``ray start --address``
as their own processes with token authentication, bound to this machine's routable address
(not loopback: the script is the one a cluster runs), then ``doreisa run --address ...
--run-dir ... --mpiexec "srun --overlap"`` with the heat example.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from doreisa.testing import free_port, routable_address

pytestmark = [pytest.mark.ray, pytest.mark.mpi, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "examples" / "slurm" / "run.sbatch"
BIN = Path(sys.executable).parent

SCONTROL = """#!/bin/bash
# scontrol show hostnames NODELIST: the job's nodes, one per line
[ "$1 $2" = "show hostnames" ] || { echo "fake scontrol: $*" >&2; exit 2; }
for node in $FAKE_NODES; do echo "$node"; done
"""

SRUN = f"""#!/bin/bash
# srun [--nodes=N] [--ntasks=N] [-w NODE] [--overlap] [-n N] COMMAND...: run COMMAND here, the
# ranks of `-n N` under mpiexec, as srun starts the tasks of an MPI job
echo "srun $*" >> "$FAKE_SRUN_LOG"
ranks=""
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes=*|--ntasks=*|--overlap|--mpi=*) shift ;;
        -w) shift 2 ;;
        -n) ranks=$2; shift 2 ;;
        *) break ;;
    esac
done
if [ -n "$ranks" ]; then exec {BIN / "mpiexec"} -n "$ranks" "$@"; fi
exec "$@"
"""


def _fake_slurm(folder: Path) -> Path:
    folder.mkdir()
    for name, text in (("scontrol", SCONTROL), ("srun", SRUN)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


@pytest.mark.timeout(
    660
)  # its batch script may take 600 s (88 s here with two CPU hogs; more when the machine is busier)
def test_the_slurm_batch_script_runs_the_heat_example(tmp_path: Path) -> None:
    try:
        address = routable_address()
    except OSError:
        pytest.skip("no routable address: a SLURM job's nodes talk over the network")
    fake = _fake_slurm(tmp_path / "slurm")
    ray_temp = tempfile.mkdtemp(prefix="dr-", dir="/tmp")  # short: Ray's socket paths are limited in length
    work = tmp_path / "job"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # the job's own Ray settings only
    env |= {
        "PATH": os.pathsep.join([str(fake), str(BIN), env["PATH"]]),
        "SLURM_JOB_ID": f"t{os.getpid()}",
        "SLURM_JOB_NODELIST": "fake[1-2]",
        "SLURM_NTASKS": "2",
        "FAKE_NODES": f"{address} {address}",
        "FAKE_SRUN_LOG": str(tmp_path / "srun.log"),
        "DOREISA_RAY_PORT": str(free_port()),
        "DOREISA_RAY_START_ARGS": f"--num-cpus=1 --object-store-memory=200000000 --temp-dir={ray_temp}",
        "DOREISA_OUTPUT": str(tmp_path / "out"),
    }
    try:
        proc = subprocess.run(["bash", str(SBATCH)], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ok"] and summary["ranks"] == 2 and summary["steps_analysed"] == {"temperature": 20}
    assert (tmp_path / "out" / "report.html").exists(), "--report"
    launches = (tmp_path / "srun.log").read_text().splitlines()
    assert sum("ray start --head" in line for line in launches) == 1
    assert sum("ray start --block --address" in line for line in launches) == 1
    (ranks,) = [line for line in launches if " -n 2 " in line]
    assert ranks.startswith("srun --overlap -n 2 python examples/heat/simulation.py"), ranks
    assert not list(work.glob(".doreisa-ray-token-*")), "the job's token is removed"
    leftover = subprocess.run(["pgrep", "-f", f"--port={env['DOREISA_RAY_PORT']}"], capture_output=True, text=True)
    assert leftover.stdout == "", "the job's Ray processes are stopped"

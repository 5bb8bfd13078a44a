"""The path a multi-host job takes, on one machine: four virtual hosts (``netns.py``), one Ray node
each, MPI ranks on two of them, ``doreisa run --address`` in situ and in transit.

- ``h0``: the Ray head (no CPU for tasks); ``doreisa run``, its driver and mpiexec run there;
- ``h1``, ``h2``: the simulation, two ranks each, started by MPICH's hydra over its ``ssh``
  launcher; each rank finds its own host's node actor in a node-local run folder;
- ``h3``: the analytics host (Ray resource ``doreisa_analytics``).

Each host has its own address, hostname, ``/dev/shm`` and run folder, so a rank that looked for
another host's node actor, or a block read from another host's shared memory, would fail the run.
The router between the hosts counts the bytes of every host pair: in transit the blocks cross to
``h3``; in situ they never leave their host. ``make test-hosts`` runs this file alone and prints
the bytes per analysed step and host pair (``docs/performance.md`` has them).
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from netns import VirtualHosts, unavailable, virtual_hosts

pytestmark = [pytest.mark.ray, pytest.mark.mpi, pytest.mark.slow, pytest.mark.hosts]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOSTS = ("h0", "h1", "h2", "h3")
SIM_HOSTS = ("h1", "h2")
PORT = 6379  # each host has its own network: no other Ray can hold it
STEPS, EVERY, SIZE = 100, 5, 256
ANALYSED = STEPS // EVERY
BLOCK_BYTES = SIZE * SIZE * 8 // 4  # one rank's block of temperature (4 ranks)


@dataclass
class Cluster:
    hosts: VirtualHosts
    env: dict[str, str]
    local: Path  # node-local on every host (its own tmpfs)

    @property
    def address(self) -> str:
        return f"{self.hosts['h0'].ip}:{PORT}"


def _ray_start(cluster: Cluster, name: str) -> subprocess.Popen[bytes]:
    host = cluster.hosts[name]
    args = [str(BIN / "ray"), "start", "--block", f"--node-ip-address={host.ip}", "--disable-usage-stats"]
    args += ["--object-store-memory=200000000", f"--temp-dir={cluster.local / 'ray'}"]
    if name == "h0":
        args += ["--head", f"--port={PORT}", "--include-dashboard=false", "--num-cpus=0"]
    else:
        args += [f"--address={cluster.address}", "--num-cpus=1"]
    if name == "h3":
        args += ["--resources", json.dumps({"doreisa_analytics": 1})]
    return host.popen(args, env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_nodes(cluster: Cluster, timeout: float) -> None:
    script = (
        "import sys, time, ray\n"
        "ray.init(address=sys.argv[1], logging_level='ERROR')\n"
        "deadline = time.monotonic() + float(sys.argv[3])\n"
        "while sum(n['Alive'] for n in ray.nodes()) < int(sys.argv[2]):\n"
        "    if time.monotonic() > deadline: sys.exit(f'{sum(n[\"Alive\"] for n in ray.nodes())} nodes joined')\n"
        "    time.sleep(0.5)\n"
    )
    done = cluster.hosts["h0"].run(
        [sys.executable, "-c", script, cluster.address, str(len(HOSTS)), str(timeout)],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=timeout + 60,
    )
    assert done.returncode == 0, f"the Ray cluster of virtual hosts did not form: {done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    why = unavailable()
    if why:
        pytest.skip(f"virtual hosts: {why}")
    base = Path(tempfile.mkdtemp(prefix="dr-", dir="/tmp"))  # short: Ray's socket paths are limited in length
    local = base / "local"
    local.mkdir()
    token = base / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "PYTHONUNBUFFERED": "1"}
    env["PATH"] = os.pathsep.join([str(BIN), env["PATH"]])
    try:
        with virtual_hosts(HOSTS, local=[local]) as hosts:
            made = Cluster(hosts, env, local)
            for name in HOSTS:  # the head first: the others join it (and retry until it listens)
                _ray_start(made, name)
            _wait_for_nodes(made, timeout=240)
            yield made
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _contract(tmp: Path, placement: str) -> Path:
    contract = yaml.safe_load((ROOT / "examples" / "heat" / "contract.yaml").read_text())
    contract["cadence"] = {"every": EVERY}
    if placement == "in_transit":
        contract["placement"] = {"mode": "in_transit", "analytics_resource": "doreisa_analytics"}
    path = tmp / f"{placement}.yaml"
    path.write_text(yaml.safe_dump(contract))
    return path


def _run(cluster: Cluster, tmp: Path, placement: str) -> tuple[dict, list[dict[str, str]], dict]:
    out = tmp / placement
    mpiexec = f"{BIN / 'mpiexec'} -launcher ssh -launcher-exec {cluster.hosts.rsh} -hosts h1:2,h2:2"
    command = [str(BIN / "doreisa"), "run", str(_contract(tmp, placement)), "--np", "4", "--output", str(out)]
    command += ["--address", cluster.address, "--run-dir", str(cluster.local / "run"), "--mpiexec", mpiexec]
    command += ["--analytics", "examples/heat/analytics.py", "--quiet", "--"]
    command += ["python", "examples/heat/simulation.py", "--steps", str(STEPS), "--size", str(SIZE)]
    before = cluster.hosts.pair_bytes()
    started = time.monotonic()
    done = cluster.hosts["h0"].run(command, cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"{shlex.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    after = cluster.hosts.pair_bytes()
    crossed = {pair: after[pair] - before[pair] for pair in after}
    network = {
        "placement": placement,
        "wall_s": round(time.monotonic() - started, 1),
        "analysed_steps": ANALYSED,
        "block_bytes": BLOCK_BYTES,
        "bytes_per_analysed_step": {f"{a}->{b}": n // ANALYSED for (a, b), n in sorted(crossed.items()) if n},
    }
    (tmp / f"network-{placement}.json").write_text(json.dumps(network, indent=1))
    print(f"\nbytes per analysed step, {placement}: {json.dumps(network['bytes_per_analysed_step'])}")
    summary = json.loads((out / "summary.json").read_text())
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    return summary, rows, crossed


def _check_summary(summary: dict) -> None:
    assert summary["ok"], summary["error"]
    assert summary["ranks"] == 4 and summary["ranks_lost"] == []
    assert summary["steps_analysed"] == {"temperature": ANALYSED}
    assert summary["blocks_published"] == 4 * ANALYSED
    assert summary["bytes_copied"] == 4 * ANALYSED * BLOCK_BYTES


@pytest.mark.timeout(900)
def test_in_situ_and_in_transit_across_hosts(cluster: Cluster, tmp_path: Path) -> None:
    in_situ, rows_situ, crossed_situ = _run(cluster, tmp_path, "in_situ")
    in_transit, rows_transit, crossed_transit = _run(cluster, tmp_path, "in_transit")
    for summary in (in_situ, in_transit):
        _check_summary(summary)
    # the same simulation and analytics: the same results wherever they ran
    assert rows_situ and rows_situ == rows_transit
    assert sorted({int(r["step"]) for r in rows_situ}) == list(range(0, STEPS, EVERY))
    # in transit, each simulation host's blocks (two ranks' worth per analysed step) cross to h3
    for sim in SIM_HOSTS:
        assert crossed_transit[sim, "h3"] >= 2 * BLOCK_BYTES * ANALYSED, crossed_transit
    # in situ, they stay home: what crosses between the simulation hosts and to h3 is partial
    # results and Ray's own messages, not blocks
    for a in SIM_HOSTS:
        for b in (*SIM_HOSTS, "h3"):
            if a != b:
                assert crossed_situ[a, b] < BLOCK_BYTES, (a, b, crossed_situ)

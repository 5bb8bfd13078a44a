"""Security cases of the reliability matrix (docs/reliability.md): S1, a client without the run's token."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from doreisa.testing import free_port, process_tree, routable_address

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BIN = Path(sys.executable).parent
CONNECT = "import ray; ray.init(address='{address}'); print('CPUs', ray.cluster_resources().get('CPU'))"


def test_S1_a_client_without_the_runs_token_is_refused(tmp_path: Path) -> None:
    """A Ray head started as doreisa's launcher starts it (token authentication, the token its own):
    a client with authentication off and one with another token cannot connect; one with the token can."""
    try:
        address = f"{routable_address()}:{free_port()}"
    except OSError:
        pytest.skip("no routable address")
    ray_temp = tempfile.mkdtemp(prefix="dr-", dir="/tmp")  # short: Ray's socket paths are limited in length
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {
        "HOME": str(tmp_path),  # no token of the user's in ~/.ray
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": "s1" * 16,
    }
    host, port = address.split(":")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--node-ip-address={host}", f"--port={port}",
         "--num-cpus=1", "--object-store-memory=100000000", "--include-dashboard=false", f"--temp-dir={ray_temp}"],
        env=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        code = CONNECT.format(address=address)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the head listens: a refused client is then a refusal, not a start
            with socket.socket() as s:
                if s.connect_ex((host, int(port))) == 0:
                    break
            time.sleep(0.5)
        right = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, timeout=120)
        assert right.returncode == 0 and "CPUs 1.0" in right.stdout, right.stderr[-2000:]
        without = {k: v for k, v in base.items() if k != "RAY_AUTH_TOKEN"} | {"RAY_AUTH_MODE": "disabled"}
        other = base | {"RAY_AUTH_TOKEN": "xx" * 16}
        tries = [subprocess.Popen([sys.executable, "-c", code], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for e in (without, other)]  # fmt: skip
        for attempt in tries:  # side by side: each waits about 20 s before Ray gives up
            out, err = attempt.communicate(timeout=120)
            assert attempt.returncode != 0 and "CPUs" not in out
            assert "Failed to connect to Ray cluster" in err, err[-2000:]
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the head's own session: ray start and its node's processes
        head.wait(timeout=60)
        shutil.rmtree(ray_temp, ignore_errors=True)
    left = subprocess.run(["pgrep", "-f", f"port={port}"], capture_output=True, text=True).stdout
    assert not left, f"processes of the test's Ray left behind: {left}"


# == S2: what a local run listens on ==========================================================

SIM = Path(__file__).parents[1] / "runtime" / "sims" / "fill.py"
S2_CONTRACT = """
arrays:
  field: {dtype: float64, shape: [8, 8]}
cadence: {every: 5}
analytics:
  - {function: max, arrays: [field]}
"""


def _address(hex_address: str) -> str:
    """An address of /proc/net/tcp or tcp6 (little-endian 32-bit words) as text."""
    import ipaddress

    raw = bytes.fromhex(hex_address)
    native = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(native))


def _listeners(pids: dict[int, str]) -> list[tuple[str, int, str]]:
    """The TCP sockets these processes listen on: (address, port, command)."""
    inodes: dict[str, str] = {}
    for pid, command in pids.items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes[target[8:-1]] = command
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                found.append((_address(address), int(port, 16), inodes[fields[9]][:160]))
    return found


def _mpi(command: str) -> bool:
    """Is this the MPI launcher or its proxy?"""
    return os.path.basename(command.split(" ")[0]).startswith(("mpiexec", "mpirun", "hydra"))


def _is_loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.mark.mpi
def test_S2_a_local_run_listens_on_loopback_only_and_starts_no_dashboard(tmp_path: Path) -> None:
    """While ``doreisa run`` runs a simulation on this machine, every TCP socket its Ray processes
    listen on is bound to a loopback address (no 0.0.0.0, no routable address: Ray rewrites
    127.0.0.1 to the routable address unless told not to), and nothing listens on the dashboard's port."""
    assert _address("0100007F") == "127.0.0.1" and _address("020200C0") == "192.0.2.2"
    assert _is_loopback(_address("0000000000000000FFFF00000100007F")), "::ffff:127.0.0.1, as /proc/net/tcp6 shows it"
    assert not _is_loopback("0.0.0.0") and not _is_loopback("::")
    contract = tmp_path / "contract.yaml"
    contract.write_text(S2_CONTRACT)
    argv = [str(BIN / "doreisa"), "run", str(contract), "--np", "2", "--output", str(tmp_path / "out"), "--quiet"]
    argv += ["--", sys.executable, str(SIM), "--shape", "8,8", "--steps", "400", "--sleep", "0.05"]
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[tuple[str, int, str]] = []
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and run.poll() is None:
            tree = process_tree(run.pid)
            rank = f"{sys.executable} {SIM}"  # a rank's command (the run's own names the simulation too)
            if any(c.startswith(rank) for c in tree.values()) and any("raylet" in c for c in tree.values()):
                time.sleep(2)  # the ranks are up: Ray's workers and agents have started
                # the simulation's side is the site's MPI (MPICH's TCP netmod listens on every interface)
                ray_side = {pid: c for pid, c in process_tree(run.pid).items() if not (c.startswith(rank) or _mpi(c))}
                seen = _listeners(ray_side)
                break
            time.sleep(0.2)
        output, _ = run.communicate(timeout=150)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output
    assert len(seen) >= 3, f"the GCS, the raylet and the workers listen: {seen}"
    exposed = [s for s in seen if not _is_loopback(s[0])]
    assert exposed == [], f"listening beyond this machine: {exposed}"
    assert all(port != 8265 for _, port, _ in seen), "no dashboard"

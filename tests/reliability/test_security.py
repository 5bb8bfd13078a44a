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

from doreisa.testing import free_port, routable_address

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

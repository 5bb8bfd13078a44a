"""`doreisa run` on a terminal: a status line that fits, and the simulation's output intact above it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.mpi, pytest.mark.slow]

SIM = Path(__file__).parent / "sims" / "fill.py"
CONTRACT = """
arrays:
  field: {dtype: float64, shape: [12, 12]}
cadence: {every: 2}
analytics:
  - function: mean
    arrays: [field]
"""
ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def _run_on_a_terminal(argv: list[str], columns: int, timeout: float) -> tuple[int, bytes]:
    """``argv`` with a pseudo-terminal of ``columns`` columns as stdout and stderr; its exit status and output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: every writer has exited
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=30), bytes(out)


def test_the_status_line_fits_and_never_mixes_with_the_simulations_output(tmp_path: Path) -> None:
    contract = tmp_path / "contract.yaml"
    contract.write_text(CONTRACT)
    argv = [sys.executable, "-m", "doreisa.cli", "run", str(contract), "--np", "2", "--output", str(tmp_path / "o")]
    argv += ["--", sys.executable, str(SIM), "--steps", "40", "--shape", "12,12", "--sleep", "0.05"]
    status, raw = _run_on_a_terminal(argv, columns=100, timeout=240)
    assert status == 0, raw.decode(errors="replace")[-3000:]
    lines = [line.strip() for line in ESCAPES.sub(b"", raw).decode().replace("\r", "\n").split("\n")]
    done = [line for line in lines if "done {" in line]
    assert len(done) == 2, lines
    for line in done:  # each rank's last print, whole, on a line of its own
        assert re.fullmatch(r'rank [01] done \{"calls": 40, .*"skipped_steps": \[\]\}', line), line
    statuses = [line for line in lines if line.startswith("doreisa ") and "| step " in line]
    assert statuses, "a status line was drawn"
    assert all(len(line) <= 100 for line in statuses), "it fits the terminal (cut with an ellipsis)"
    assert "doreisa run summary" in lines

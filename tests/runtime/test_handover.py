"""The node actor honours the contract's ``handover``: a post wakes it only when it does not poll."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from doreisa.runtime.ring import TOTAL_STORE_ORDER
from doreisa.testing import run_coupled

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

SIM = Path(__file__).parent / "sims" / "fill.py"
STEPS = 20


def _run(handover: str, sleep: float = 0.0) -> list[dict[str, Any]]:
    text = f"""
arrays:
  field: {{dtype: float64, shape: [8, 8]}}
cadence: {{every: 1}}
backpressure: {{max_in_flight: 100}}
handover: {handover}
timeouts: {{connect: 30, step: 30}}
analytics:
  - function: sum
    arrays: [field]
"""
    command = [sys.executable, str(SIM), "--steps", str(STEPS), "--shape", "8,8", "--sleep", str(sleep)]
    run = run_coupled(text, command, nranks=2)
    assert run.returncode == 0, run.output
    assert sorted(run.values["sum"]) == list(range(STEPS))
    stats = list(run.session.state.closed.values())
    assert [s.published for s in stats] == [STEPS, STEPS]
    return stats


def test_linger_zero_wakes_the_node_actor_at_every_block(ray_cluster: Any) -> None:
    assert [s.wakes for s in _run("{linger_ms: 0}")] == [STEPS, STEPS]


@pytest.mark.skipif(not TOTAL_STORE_ORDER, reason="the node actor polls only where stores are seen in order")
def test_blocks_back_to_back_reach_a_polling_node_actor_without_waking_it(ray_cluster: Any) -> None:
    # A ring starts asleep: its first blocks wake the node until it polls (for the whole run).
    # Steps 10 ms apart: unpaced, a rank can publish all 20 before its node actor's thread has run.
    # On a loaded machine the node actor's thread may start polling late: a rank wakes it until then.
    wakes = [s.wakes for s in _run("{poll_ms: 1, linger_ms: 5000}", sleep=0.02)]
    assert all(w < STEPS for w in wakes) and sum(wakes) < len(wakes) * STEPS // 2, wakes

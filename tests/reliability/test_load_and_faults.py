"""Load (L) and fault (F) cases of the reliability matrix that no other test covers (docs/reliability.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from doreisa.testing import run_coupled

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

SIM = Path(__file__).parents[1] / "runtime" / "sims" / "fill.py"


def test_L6_the_first_step_need_not_be_0_and_windows_fill_from_the_first_one_seen(ray_cluster: Any) -> None:
    """The simulation starts at step 3 (a restart): nothing assumes 0; a 2-step window is full at the 2nd copy."""
    contract = """
arrays:
  field: {dtype: float64, shape: [8, 8], window: 2}
cadence: {every: 2}
analytics:
  - {function: max, arrays: [field]}
  - {function: time_derivative, arrays: [field]}
"""
    sim = [sys.executable, str(SIM), "--shape", "8,8", "--first-step", "3", "--steps", "10", "--dt", "0.5"]
    run = run_coupled(contract, sim, nranks=2)
    assert run.returncode == 0, run.output
    assert run.values["max"] == {s: s + 7007.0 for s in (4, 6, 8, 10, 12)}, "the steps the cadence wants, from 3 on"
    assert run.values["time_derivative"] == {s: pytest.approx(2.0) for s in (6, 8, 10, 12)}, "from the 2nd copy"


def test_F7_a_rank_that_dies_mid_run_is_named_and_no_half_step_is_analysed(ray_cluster: Any) -> None:
    """Rank 1 of 4 exits abruptly at step 6 (MPI then ends the others): the run ends, rank 1 is among the lost
    (which node actor sees its rank go first is a race when MPI ends the others at once), every step
    analysed is whole, and a step some ranks had sent is reported lost with who sent it."""
    contract = """
arrays:
  field: {dtype: float64, shape: [8, 8]}
cadence: {every: 1}
timeouts: {connect: 60, step: 20}
analytics:
  - {function: max, arrays: [field]}
"""
    sim = [sys.executable, str(SIM), "--shape", "8,8", "--steps", "20", "--die-at", "6", "--sleep", "0.05"]
    run = run_coupled(contract, sim, nranks=4)
    assert run.returncode != 0, "the simulation failed, and says so"
    state = run.session.state
    assert 1 in state.lost_order
    analysed = run.values["max"]
    assert set(analysed) <= set(range(6)) and analysed == {s: s + 7007.0 for s in analysed}, "whole steps only"
    assert set(range(5)) <= set(analysed), "the steps before the death are analysed"
    for lost in state.lost_steps:  # steps other ranks had sent: lost, naming who sent what
        assert lost.step >= 5 and 1 not in lost.ranks_seen and lost.have < lost.expected == 4

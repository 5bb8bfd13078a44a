"""``finite: true``: NaN and Inf counted at the ranks on every step, reported, and a trigger on them."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

from doreisa.runtime.cluster.summary import format_summary, run_summary
from doreisa.testing import run_coupled

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

SIM = Path(__file__).parent / "sims" / "fill.py"

CONTRACT = """
arrays:
  field: {dtype: float64, shape: [8, 8], finite: true}
cadence: {every: 10}
triggers:
  - name: blowup
    when: nonfinite(field) > 0
    action: {cadence: {every: 1}}
analytics:
  - {function: max, arrays: [field]}
"""


def test_nonfinite_values_are_counted_reported_and_fire_a_trigger(ray_cluster: Any) -> None:
    sim = [sys.executable, str(SIM), "--shape", "8,8", "--steps", "30", "--nonfinite", "13:16"]
    run = run_coupled(CONTRACT, sim, nranks=2)
    assert run.returncode == 0, run.output
    counted = run.values["monitor:nonfinite(field)"]
    assert counted == {s: (2.0 if 13 <= s < 16 else 0.0) for s in range(30)}, "every step, copied or not"
    on, off = run.session.provenance.records
    assert (on["decided_at"], on["triggers"], on["values"]) == (13, {"blowup": True}, {"nonfinite(field)": 2.0})
    assert (off["decided_at"], off["triggers"]) == (16, {"blowup": False})
    analysed = sorted(run.values["max"])
    assert analysed == sorted({0, 10, 20, *range(on["step"], off["step"])})
    assert all(math.isnan(run.values["max"][s]) for s in analysed if 13 <= s < 16), "the analytics see the NaN"
    for step in (13, 14, 15):  # rank 0 says it in the simulation's output, with the step
        assert f"array 'field' step {step}: 2 non-finite values (NaN or Inf)" in run.output
    assert "step 16: " not in run.output

    summary = run_summary(run.session, None, None, [], 1.0)
    assert summary["ok"] and summary["nonfinite"] == {
        "field": {"steps": 3, "values": 6, "first_step": 13, "last_step": 15}
    }
    warning = "array 'field': 6 non-finite value(s) (NaN or Inf) in 3 step(s), steps 13 to 15"
    assert warning in summary["warnings"] and f"? {warning}" in format_summary(summary)

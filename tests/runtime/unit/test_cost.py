"""The cost of the analysis: CPU read from /proc for a process tree, and the energy estimate."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from doreisa.errors import DoreisaError
from doreisa.runtime.cluster.cost import cost_text, cpu_since, estimate, tree_cpu

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="Linux /proc")
def test_the_cpu_of_a_process_tree_grows_with_what_its_children_burn() -> None:
    before = tree_cpu(os.getpid())
    assert before is not None and os.getpid() in before
    child = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        deadline = time.monotonic() + 60
        while True:  # until the child has burnt its 0.3 s (a loaded machine takes longer)
            now = tree_cpu(os.getpid())
            assert now is not None
            if now.get(child.pid, 0.0) >= 0.3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert child.pid in now and child.pid not in before
        spent = cpu_since(before, now)
        assert spent is not None and spent >= 0.29, "the child's CPU counts, from 0"
    finally:
        child.kill()
        child.wait()


def test_unknown_cpu_stays_unknown() -> None:
    assert tree_cpu(2**22 + 12345) is None  # no such process
    assert cpu_since(None, {1: 2.0}) is None and cpu_since({1: 2.0}, None) is None
    assert cpu_since({1: 2.0, 2: 5.0}, {1: 3.5, 3: 1.0}) == 2.5, "growth, plus the new process; an ended one is lost"


def test_the_estimate_multiplies_core_seconds_by_the_factors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOREISA_WATTS_PER_CORE", "12")
    monkeypatch.setenv("DOREISA_CARBON_G_PER_KWH", "50")
    cost = estimate(ray_cpu_s=2400.0, driver_cpu_s=600.0, publish_s=600.0)
    assert cost["analytics_cpu_s"] == 3000.0 and cost["core_s"] == 3600.0
    assert cost["energy_wh"] == 12.0 and cost["co2_g"] == 0.6
    assert cost_text(cost) == (
        "analytics 3000.0 CPU-s, ranks' publish 600.00 s; about 12 Wh, 0.6 g CO2e (12 W/core, 50 g/kWh)"
    )
    unknown = estimate(ray_cpu_s=None, driver_cpu_s=1.0, publish_s=0.0)
    assert unknown["analytics_cpu_s"] is None and cost_text(unknown).startswith("analytics unknown, ")


@pytest.mark.parametrize("value", ["0", "-3", "ten", ""])
def test_a_bad_factor_names_its_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DOREISA_WATTS_PER_CORE", value)
    with pytest.raises(DoreisaError, match=rf"\$DOREISA_WATTS_PER_CORE must be a positive number, got '{value}'"):
        estimate(1.0, 1.0, 1.0)

"""What the analysis cost: CPU time on the Ray side and in the ranks' ``publish``, and an energy
and CO2 estimate from it.

CPU time on a Ray node is read from ``/proc`` for the process tree of its raylet (the worker
processes that run the analytics' tasks, the node and transit actors, the object store), as the
growth between the run's start and its end; processes that ended during the run are not
counted, nor the GCS. Off Linux, or where ``/proc`` cannot be read, it is unknown (None).

The estimate multiplies core-seconds by a power per core and a carbon intensity: both are
defaults to replace with your machine's and your grid's (``DOREISA_WATTS_PER_CORE``,
``DOREISA_CARBON_G_PER_KWH``). It is an order of magnitude, not a measurement.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from doreisa.errors import DoreisaError

#: Default power per busy core, in watts: a two-socket node of 2 x 64 cores drawing about 1 kW
#: at full load, memory, network and fans included (about 8 W per core), rounded up.
WATTS_PER_CORE = 10.0
#: Default carbon intensity of electricity, in grams of CO2 equivalent per kWh: between the
#: European Union's average (about 250) and the world's (about 480).
CARBON_G_PER_KWH = 400.0

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu(root: int) -> dict[int, float] | None:
    """CPU seconds (user + system) of ``root`` and every process below it, by pid; None without ``/proc``."""
    proc = Path("/proc")
    try:
        entries = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return None
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in entries:
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        parent[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
    if root not in cpu:
        return None
    tree, frontier = {root}, [root]
    while frontier:
        below = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in tree]
        tree.update(below)
        frontier = below
    return {pid: cpu[pid] for pid in tree}


def cpu_since(start: Mapping[int, float] | None, now: Mapping[int, float] | None) -> float | None:
    """CPU seconds spent between two :func:`tree_cpu` readings (a process started since counts from 0)."""
    if start is None or now is None:
        return None
    return sum(max(0.0, seconds - start.get(pid, 0.0)) for pid, seconds in now.items())


def factor(name: str, default: float) -> float:
    """A positive number from the environment variable ``name``, else ``default``.

    Raises
    ------
    DoreisaError
        Naming the variable, when it is not a positive number.
    """
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DoreisaError(f"${name} must be a positive number, got {text!r}")
    return value


def factors() -> tuple[float, float]:
    """Watts per core and grams of CO2e per kWh, from the environment or the defaults.

    ``doreisa run`` reads them before it starts anything, so that a bad value stops it then,
    not when the summary is written.

    Raises
    ------
    DoreisaError
        Naming the variable that is not a positive number.
    """
    return factor("DOREISA_WATTS_PER_CORE", WATTS_PER_CORE), factor("DOREISA_CARBON_G_PER_KWH", CARBON_G_PER_KWH)


def estimate(ray_cpu_s: float | None, driver_cpu_s: float, publish_s: float) -> dict[str, Any]:
    """The ``cost`` entry of ``summary.json``."""
    watts, carbon = factors()
    core_s = driver_cpu_s + publish_s + (ray_cpu_s or 0.0)
    energy_wh = core_s * watts / 3600
    return {
        "analytics_cpu_s": None if ray_cpu_s is None else round(ray_cpu_s + driver_cpu_s, 3),
        "ray_nodes_cpu_s": None if ray_cpu_s is None else round(ray_cpu_s, 3),
        "driver_cpu_s": round(driver_cpu_s, 3),
        "publish_s": round(publish_s, 6),
        "core_s": round(core_s, 3),
        "watts_per_core": watts,
        "energy_wh": round(energy_wh, 6),
        "carbon_g_per_kwh": carbon,
        "co2_g": round(energy_wh / 1000 * carbon, 6),
    }


def cost_text(cost: Mapping[str, Any]) -> str:
    """One line for the summary table."""
    analytics = "unknown" if cost["analytics_cpu_s"] is None else f"{cost['analytics_cpu_s']:.1f} CPU-s"
    return (
        f"analytics {analytics}, ranks' publish {cost['publish_s']:.2f} s; about {cost['energy_wh']:.3g} Wh, "
        f"{cost['co2_g']:.3g} g CO2e ({cost['watts_per_core']:g} W/core, {cost['carbon_g_per_kwh']:g} g/kWh)"
    )

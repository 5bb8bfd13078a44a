"""The main demo: a 4-rank MPI heat simulation analysed in situ through a contract.

``make demo`` runs this. It is the same as::

    doreisa run examples/heat/contract.yaml --np 4 --output out/demo \\
        --analytics examples/heat/analytics.py -- python examples/heat/simulation.py

followed by a plot of the recorded time series (``out/demo/timeseries.png``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def plot(output: Path) -> Path:
    """Plot every scalar series of ``results.csv`` against simulation time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    with (output / "results.csv").open() as f:
        for row in csv.DictReader(f):
            if row["value"]:
                series.setdefault(row["analytic"], []).append((float(row["time"]), float(row["value"])))
    fig, axes = plt.subplots(len(series), 1, figsize=(7, 2.2 * len(series)), sharex=True, squeeze=False)
    for ax, (name, points) in zip(axes[:, 0], sorted(series.items()), strict=True):
        ax.plot(*zip(*points, strict=True), marker="o", markersize=3)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("simulation time")
    fig.suptitle("heat demo: in situ analytics every 10 steps")
    fig.tight_layout()
    path = output / "timeseries.png"
    fig.savefig(path, dpi=100)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="out/demo")
    parser.add_argument("--np", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=256, help="grid size; must match the contract's shape")
    parser.add_argument("--contract", default=str(HERE / "contract.yaml"))
    args = parser.parse_args()

    from doreisa.runtime.cluster.launcher import run

    summary = run(
        args.contract,
        nranks=args.np,
        output=args.output,
        analytics=[str(HERE / "analytics.py")],
        command=[sys.executable, str(HERE / "simulation.py"), "--steps", str(args.steps), "--size", str(args.size)],
    )
    if summary["analytic_calls"]:
        print(f"plot: {plot(Path(args.output))}", file=sys.stderr)
    print(
        f"results: {Path(args.output) / 'results.csv'}, summary: {Path(args.output) / 'summary.json'}", file=sys.stderr
    )
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

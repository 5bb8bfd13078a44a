"""Regions and chunk-local preprocessing end to end: exact values and bytes copied (issue 5)."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from doreisa.analytics import Registry
from doreisa.testing import run_coupled

pytestmark = [pytest.mark.ray, pytest.mark.mpi]

SIM = Path(__file__).parent / "sims" / "fill.py"
sys.path.insert(0, str(SIM.parent))
from fill import expected  # noqa: E402

SHAPE = (24, 20)


def keep_registry() -> Registry:
    registry = Registry()

    @registry.analytic("whole")
    def whole(x: Any) -> Any:
        return x  # the driver computes it: the array the analytics see

    return registry


def run_with(array_extra: str, nranks: int = 4) -> Any:
    text = f"""
arrays:
  field: {{dtype: float64, shape: [{SHAPE[0]}, {SHAPE[1]}]{array_extra}}}
cadence: {{every: 3}}
timeouts: {{connect: 30, step: 30}}
analytics:
  - function: whole
    arrays: [field]
"""
    run = run_coupled(
        text,
        [sys.executable, str(SIM), "--steps", "7", "--shape", f"{SHAPE[0]},{SHAPE[1]}"],
        nranks=nranks,
        registry=keep_registry(),
    )
    assert run.returncode == 0, run.output
    assert sorted(run.values["whole"]) == [0, 3, 6]
    return run


def copied(run: Any) -> int:
    return sum(s.bytes_copied for s in run.session.state.closed.values())


@pytest.mark.parametrize(
    ("select", "region"),
    [
        ("[{start: 5, stop: 17}, {start: 3, stop: 18}]", (slice(5, 17), slice(3, 18))),
        ("[{start: 1, stop: 23, step: 3}, {step: 2}]", (slice(1, 23, 3), slice(0, 20, 2))),
        ("[{stop: 6}, {start: 15}]", (slice(0, 6), slice(15, 20))),
    ],
    ids=["box", "strided", "corner"],
)
def test_only_the_selected_region_is_copied_and_seen(ray_cluster: Any, select: str, region: tuple[slice, ...]) -> None:
    run = run_with(f", select: {select}")
    for step in (0, 3, 6):
        np.testing.assert_array_equal(run.values["whole"][step], expected(SHAPE, step)[region])
    size = expected(SHAPE, 0)[region].size
    assert copied(run) == 3 * size * 8, "exactly the region's bytes, no more"


def test_blocks_outside_the_region_are_never_copied(ray_cluster: Any) -> None:
    run = run_with(", select: [{stop: 6}, {stop: 6}]")  # only rank 0's block of the 2x2 grid
    published = {int(r): s.published for r, s in run.session.state.closed.items()}
    assert published == {0: 3, 1: 0, 2: 0, 3: 0}
    assert all(s.not_selected == 3 for r, s in run.session.state.closed.items() if int(r) != 0)


def test_downsample_and_cast(ray_cluster: Any) -> None:
    run = run_with(", preprocess: {function: downsample, params: {factor: 2}}")
    for step in (0, 3, 6):
        np.testing.assert_array_equal(run.values["whole"][step], expected(SHAPE, step)[::2, ::2])
    run = run_with(", preprocess: {function: cast, params: {dtype: float32}}")
    assert run.values["whole"][3].dtype == np.float32
    np.testing.assert_array_equal(run.values["whole"][3], expected(SHAPE, 3).astype(np.float32))
    assert copied(run) == 3 * math.prod(SHAPE) * 4


def test_stats_reduces_each_block_to_four_numbers(ray_cluster: Any) -> None:
    run = run_with(", preprocess: stats")
    assert copied(run) == 3 * 4 * 4 * 8, "4 float64 per block, whatever the block size"
    for step in (0, 3, 6):
        stats = run.values["whole"][step]
        assert stats.shape == (2, 2, 4)
        full = expected(SHAPE, step)
        assert stats[..., 0].min() == full.min() and stats[..., 1].max() == full.max()
        assert stats[..., 2].sum() == full.sum() and stats[..., 3].sum() == full.size
        np.testing.assert_array_equal(
            stats[0, 0], [full[:12, :10].min(), full[:12, :10].max(), full[:12, :10].sum(), 120]
        )


def test_user_preprocess_function(ray_cluster: Any) -> None:
    run = run_with(", preprocess: {function: 'numpy:negative'}")
    np.testing.assert_array_equal(run.values["whole"][6], -expected(SHAPE, 6))


def test_a_sink_and_an_operator_from_outside_the_package_run_end_to_end(ray_cluster: Any, tmp_path: Path) -> None:
    import toy_plugins  # noqa: F401  # registers toy_negate_scale and toy_jsonl here, where the contract loads

    text = f"""
arrays:
  field:
    dtype: float64
    shape: [{SHAPE[0]}, {SHAPE[1]}]
    preprocess: {{function: toy_negate_scale, params: {{factor: 3}}}}
cadence: {{every: 2}}
timeouts: {{connect: 30, step: 30}}
analytics:
  - function: whole
    arrays: [field]
  - function: total
    arrays: [field]
outputs: {{formats: [npy, csv, toy_jsonl]}}
"""
    command = [
        sys.executable,
        str(SIM),
        "--steps",
        "5",
        "--shape",
        f"{SHAPE[0]},{SHAPE[1]}",
        "--plugins",
        "toy_plugins",
    ]
    registry = keep_registry()

    @registry.analytic("total")
    def total(x: Any) -> Any:
        return x.sum()

    run = run_coupled(text, command, nranks=4, registry=registry, output=tmp_path)
    assert run.returncode == 0, run.output
    for step in (0, 2, 4):  # the operator ran in every rank: every block is -3 x the simulation's
        np.testing.assert_array_equal(run.values["whole"][step], -3 * expected(SHAPE, step))
    rows = [json.loads(line) for line in (tmp_path / "toy.jsonl").read_text().splitlines()]  # closed: written
    sums = {r["step"]: float(r["value"]) for r in rows if r["analytic"] == "total"}
    assert sums == {step: float((-3 * expected(SHAPE, step)).sum()) for step in (0, 2, 4)}
    wholes = {r["step"]: r for r in rows if r["analytic"] == "whole"}
    assert sorted(wholes) == [0, 2, 4]
    for step, row in wholes.items():  # the table sink learns where the store sink put each array
        assert row["value"] is None and row["stored"] == [f"arrays/whole/step_{step:08d}.npy"]
        np.testing.assert_array_equal(np.load(tmp_path / row["stored"][0]), -3 * expected(SHAPE, step))
    with (tmp_path / "results.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert [(r["analytic"], r["step"], r["file"]) for r in csv_rows if r["analytic"] == "whole"] == [
        ("whole", str(s), f"arrays/whole/step_{s:08d}.npy") for s in (0, 2, 4)
    ]

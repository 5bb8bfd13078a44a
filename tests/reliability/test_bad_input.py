"""The "Bad inputs and security" matrix of shared/RELIABILITY.md (B1 to B12): one or more tests per case.

Each test is named after its case and checks the behaviour the matrix asks for, through the
parts a user has: ``load_contract`` on a real file, a real ``Bridge`` over an
``InProcessTransport`` (several ranks as threads sharing a fake communicator), the analytics
registry, and for B12 a real Ray cluster with real MPI ranks. Where doreisa does not do what
the matrix asks yet, the test says so with ``xfail(strict=True)`` and why.
"""

from __future__ import annotations

import ast
import builtins
import logging
import re
import subprocess
import sys
import threading
import time
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import yaml

from doreisa import Bridge, load_contract
from doreisa.analytics import Registry, bind_analytics, default_registry
from doreisa.cli import main
from doreisa.contract import Contract, expressions, parse_expression
from doreisa.errors import (
    AnalyticsError,
    BlockMismatchError,
    BridgeError,
    ContractError,
    LayoutError,
    RuntimeUnavailableError,
    StoreWarning,
)
from doreisa.runtime.protocol import MonitorBatch, RingOpened
from doreisa.runtime.rank.comm import SingleProcessComm
from doreisa.testing import InProcessTransport, mpiexec, run_coupled

ROOT = Path(__file__).resolve().parents[2]
FILL = ROOT / "tests" / "runtime" / "sims" / "fill.py"

#: A contract of one 2-D array; cases append below, so their line numbers start at 6.
ARRAY = """\
arrays:
  temp:
    dtype: float64
    shape: [8, 8]
    block: [4, 4]
"""


def _write(tmp_path: Path, text: str, name: str = "contract.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _load_error(path: Path) -> str:
    with pytest.raises(ContractError) as info:
        load_contract(path)
    message = str(info.value)
    assert "Traceback" not in message
    return message


def _quoted(text: str) -> str:
    """``text`` as a single-quoted YAML scalar."""
    return "'" + text.replace("'", "''") + "'"


def _trigger(when: str) -> str:
    return ARRAY + f"triggers:\n  - name: t\n    when: {_quoted(when)}\n    action:\n      cadence: {{every: 1}}\n"


def _selected_rules() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["ruff"]["lint"]["select"]


# -- the rank side: a real Bridge, one rank or several ranks as threads ------------------------

FIELD = """\
arrays:
  field: {dtype: float64, shape: [10, 10], block: [10, 10]}
"""
TILED = """\
arrays:
  field: {dtype: float64, shape: [8, 8], block: [4, 4]}
"""


def _bridge(tmp_path: Path, text: str) -> tuple[Bridge, InProcessTransport]:
    transport = InProcessTransport(load_contract(_write(tmp_path, text)))
    return Bridge(SingleProcessComm(), transport=transport), transport


def _data(step: int, shape: tuple[int, ...] = (10, 10)) -> np.ndarray[Any, Any]:
    return np.arange(float(np.prod(shape))).reshape(shape) + 1000 * step


class _Group:
    """What the ranks of a ThreadComm share: one slot each and a barrier (every wait has a timeout)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=10)
        self.slots: list[Any] = [None] * size

    def exchange(self, rank: int, obj: Any) -> list[Any]:
        self.slots[rank] = obj
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out


class ThreadComm:
    """A communicator whose ranks are threads of this process."""

    def __init__(self, group: _Group, rank: int) -> None:
        self._group, self._rank = group, rank

    def Get_rank(self) -> int:
        return self._rank

    def Get_size(self) -> int:
        return self._group.size

    def allgather(self, obj: Any, /) -> list[Any]:
        return self._group.exchange(self._rank, obj)

    def bcast(self, obj: Any, /, root: int = 0) -> Any:
        return self._group.exchange(self._rank, obj)[root]


def _on_ranks(size: int, body: Callable[[ThreadComm], Any]) -> list[Any]:
    """Run ``body`` on ``size`` ranks (threads); each rank's result, or the exception it raised."""
    group = _Group(size)
    results: list[Any] = [None] * size

    def target(rank: int) -> None:
        try:
            results[rank] = body(ThreadComm(group, rank))
        except Exception as exc:
            results[rank] = exc

    threads = [threading.Thread(target=target, args=(rank,), name=f"rank-{rank}") for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not any(t.is_alive() for t in threads), "a rank did not finish"
    return results


def _publish_at(contract: Contract, offsets: list[tuple[int, int]]) -> list[Any]:
    """Every rank publishes a 4x4 block of ``field`` at its offset (step 0); per rank: what it posted, or its error."""

    def body(comm: ThreadComm) -> Any:
        transport = InProcessTransport(contract)
        bridge = Bridge(comm, transport=transport)
        try:
            bridge.publish("field", np.zeros((4, 4)), step=0, offset=offsets[comm.Get_rank()])
        except BridgeError as exc:
            assert transport.posted == [], "nothing is copied when the layout is refused"
            return exc
        return transport.posted

    return _on_ranks(len(offsets), body)


# == B1: malformed contract YAML ===============================================================


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("arrays:\n  temp: [1, 2\ncadence: {every: 1}\n", "3:8", "not valid YAML: did not find expected ',' or ']'"),
        (ARRAY + "cadence: {every: 1\n", "7:1", "not valid YAML: did not find expected ',' or '}'"),
        (ARRAY + "\tcadence: {every: 1}\n", "6:1", "YAML does not allow tabs for indentation: use spaces"),
        ("arrays:\n\ttemp: {dtype: float64, shape: [4]}\n", "2:1", "use spaces"),
        (ARRAY + "cadence: {every: 1}\ncadence: {every: 2}\n", "7:1", "cadence: duplicate key (first given on line 6)"),
        (ARRAY + "    dtype: float32\n", "6:5", "arrays.temp.dtype: duplicate key (first given on line 3)"),
    ],
    ids=["syntax", "unclosed-mapping", "tab", "tab-nested", "duplicate-key", "duplicate-nested-key"],
)
def test_B1_malformed_yaml_names_file_line_and_column(tmp_path: Path, text: str, where: str, says: str) -> None:
    path = _write(tmp_path, text)
    message = _load_error(path)
    assert message.startswith(f"{path}:{where}: "), message
    assert says in message


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- arrays\n- cadence\n", "list"), ("temp\n", "str"), ("42\n", "int")],
    ids=["list", "scalar", "number"],
)
def test_B1_top_level_not_a_mapping_names_file_line_and_column(tmp_path: Path, text: str, kind: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(
        ContractError, match=rf"^{re.escape(str(path))}:1:1: the top level must be a mapping .*got a {kind}$"
    ):
        load_contract(path)


@pytest.mark.parametrize(
    "text", ["", "\n\n", "   \n", "# only a comment\n"], ids=["empty", "newlines", "blank", "comment"]
)
def test_B1_empty_file_means_nothing_declared_not_a_crash(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    # a ContractError that says what is missing, not a TypeError from a None document
    message = _load_error(path)
    assert message == f"{path}:1:1: the contract is empty; it must declare at least 'arrays:'"


def test_B1_malformed_yaml_stops_doreisa_run_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, ARRAY + "\tcadence: {every: 1}\n")
    out = tmp_path / "out"
    assert main(["run", str(path), "--np", "1", "--output", str(out), "--", sys.executable, "-c", "pass"]) == 1
    err = capsys.readouterr().err
    assert f"{path}:6:1: not valid YAML" in err
    assert "Traceback" not in err
    assert not out.exists(), "nothing was started: not even the output folder"


# == B2: unknown or misspelled keys, wrong value types ========================================


ARRAY_KEYS = "dtype, shape, block, dims, select, preprocess, window, cadence, placement"


@pytest.mark.parametrize(
    ("text", "says", "valid"),
    [
        (ARRAY + "    chunk_shap: [4, 4]\n", "6:5: arrays.temp.chunk_shap: unknown key 'chunk_shap'", ARRAY_KEYS),
        (ARRAY + "    blok: [4, 4]\n", "6:5: arrays.temp.blok: unknown key 'blok' (did you mean 'block'?)", ARRAY_KEYS),
        (
            ARRAY + "cadense: {every: 2}\n",
            "6:1: cadense: unknown key 'cadense' (did you mean 'cadence'?)",
            "version, arrays, cadence",
        ),
    ],
    ids=["chunk_shap", "blok", "cadense"],
)
def test_B2_unknown_key_is_refused_listing_the_valid_keys(tmp_path: Path, text: str, says: str, valid: str) -> None:
    path = _write(tmp_path, text)
    message = _load_error(path)
    assert f"{path}:{says}" in message
    assert f"; valid keys here: {valid}" in message


def test_B2_misspelled_dtype_lists_the_valid_dtypes(tmp_path: Path) -> None:
    path = _write(tmp_path, ARRAY.replace("float64", "flaot32"))
    message = _load_error(path)
    assert f"{path}:3:5: arrays.temp.dtype: Input should be 'bool', 'int8'" in message
    assert "'float32', 'float64'" in message


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("[8, 8]", "[8, -8]", "4:16: arrays.temp.shape[1]: Input should be greater than 0"),
        ("[8, 8]", "[0, 8]", "4:13: arrays.temp.shape[0]: Input should be greater than 0"),
        ("[4, 4]", "[3, 4]", "5:5: arrays.temp.block: block [3, 4] does not tile shape [8, 8] along dims [0]"),
        ("[4, 4]", "[4, 4, 1]", "5:5: arrays.temp.block: block has 3 dims but shape [8, 8] has 2"),
        ("[8, 8]", "eight", "4:5: arrays.temp.shape: Input should be a list"),
        ("[8, 8]", "[8, 2.5]", "4:16: arrays.temp.shape[1]: Input should be a valid integer"),
    ],
    ids=["negative", "zero", "not-dividing", "dims-mismatch", "string", "fractional"],
)
def test_B2_bad_shapes_are_refused(tmp_path: Path, old: str, new: str, says: str) -> None:
    path = _write(tmp_path, ARRAY.replace(old, new))
    assert f"{path}:{says}" in _load_error(path)


# == B3: malicious YAML tags ===================================================================


@pytest.mark.parametrize(
    ("tag", "payload"),
    [
        ("!!python/object/apply:os.system", '!!python/object/apply:os.system ["touch {marker}"]'),
        ("!!python/object/new:subprocess.Popen", "!!python/object/new:subprocess.Popen [[touch, {marker}]]"),
    ],
    ids=["apply", "new"],
)
def test_B3_python_tags_are_refused_and_never_run(tmp_path: Path, tag: str, payload: str) -> None:
    marker = tmp_path / "marker-file"
    text = ARRAY + "cadence: " + payload.format(marker=marker) + "\n"
    path = _write(tmp_path, text)
    message = _load_error(path)
    assert f"{path}:6:10: cadence: the tag {tag!r} is not allowed" in message
    assert not marker.exists()
    with pytest.raises(yaml.constructor.ConstructorError, match="could not determine a constructor"):
        yaml.safe_load(text)  # what the matrix names: safe_load refuses the tag too
    assert not marker.exists()


def test_B3_lint_gate_refuses_yaml_load(tmp_path: Path) -> None:
    assert "S506" in _selected_rules()
    unsafe = tmp_path / "unsafe.py"
    unsafe.write_text(
        "import yaml\n\n\ndef read(text: str) -> object:\n    return yaml.load(text, Loader=yaml.Loader)\n"
    )
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(unsafe)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode == 1, lint.stdout + lint.stderr
    assert "S506" in lint.stdout


# == B4: wrong dtype or shape at publish =======================================================


@pytest.mark.parametrize(
    ("block", "error", "match"),
    [
        (
            _data(0).astype(np.float32),
            BlockMismatchError,
            r"rank 0: array 'field': block dtype is float32; the contract says float64",
        ),
        (
            _data(0).astype(object),
            BlockMismatchError,
            r"rank 0: array 'field': block dtype is object; the contract says float64",
        ),
        (np.array(1.0), BlockMismatchError, r"rank 0: array 'field': block is 0-D; the contract's array is 2-D"),
        (
            np.zeros((9, 10)),
            LayoutError,
            r"rank 0: array 'field' block has shape \(9, 10\); the contract says \(10, 10\)",
        ),
    ],
    ids=["float32", "object", "0-d", "shape-9x10"],
)
def test_B4_wrong_block_at_the_first_publish_is_refused_before_any_copy(
    tmp_path: Path, block: Any, error: type[BridgeError], match: str
) -> None:
    bridge, transport = _bridge(tmp_path, FIELD)
    with pytest.raises(error, match=match):
        bridge.publish("field", block, step=0, offset=(0, 0))
    assert transport.posted == []
    assert not any(isinstance(m, RingOpened) for m in transport.sent), "no staging was opened"
    assert (bridge.stats.published, bridge.stats.bytes_copied) == (0, 0)


@pytest.mark.parametrize(
    ("block", "match"),
    [
        (
            _data(1).astype(np.float32),
            r"rank 0: array 'field' step 1: block dtype is float32; the contract says float64",
        ),
        (_data(1).astype(object), r"rank 0: array 'field' step 1: block dtype is object"),
        (np.array(1.0), r"rank 0: array 'field' step 1: block is 0-D; the contract's array is 2-D"),
        (np.zeros((9, 10)), r"step 1: block shape \(9, 10\) differs from its shape at the first publish, \(10, 10\)"),
        (_data(1).tolist(), r"step 1: block must be a numpy array, got list"),
    ],
    ids=["float32", "object", "0-d", "shape-9x10", "list"],
)
def test_B4_wrong_block_later_is_a_block_mismatch_raised_before_any_copy(
    tmp_path: Path, block: Any, match: str
) -> None:
    bridge, transport = _bridge(tmp_path, FIELD)
    assert bridge.publish("field", _data(0), step=0)
    with pytest.raises(BlockMismatchError, match=match) as info:
        bridge.publish("field", block, step=1, offset=(0, 0))
    assert isinstance(info.value, ValueError)  # what a user already catches
    assert [p.step for p in transport.posted] == [0]
    assert (bridge.stats.published, bridge.stats.bytes_copied) == (1, 10 * 10 * 8)


def test_B4_non_contiguous_view_of_the_right_shape_is_copied_exactly(tmp_path: Path) -> None:
    # Not refused: the Bridge copies any memory layout (its documented contract), and copies it right.
    bridge, transport = _bridge(tmp_path, FIELD)
    big = _data(0, (10, 20))
    view = big[:, ::2]
    assert not view.flags.c_contiguous and view.shape == (10, 10)
    assert bridge.publish("field", view, step=0)
    np.testing.assert_array_equal(transport.posted[0].block, big[:, ::2])
    transposed = _data(1).T
    assert bridge.publish("field", transposed, step=1)
    np.testing.assert_array_equal(transport.posted[1].block, _data(1).T)
    wrong = _data(2, (10, 20))[:, ::4]
    with pytest.raises(BlockMismatchError, match=r"block shape \(10, 5\) differs from its shape at the first publish"):
        bridge.publish("field", wrong, step=2)
    assert len(transport.posted) == 2


# == B5: overlapping, missing or out-of-range block positions ==================================


def _tiled(tmp_path: Path) -> Contract:
    return load_contract(_write(tmp_path, TILED))


def test_B5_two_ranks_claiming_one_block_are_named_with_the_hole_they_leave(tmp_path: Path) -> None:
    results = _publish_at(_tiled(tmp_path), [(0, 0), (0, 0), (4, 0), (4, 4)])
    for rank, result in enumerate(results):
        assert isinstance(result, LayoutError), f"rank {rank}: {result!r}"
        assert str(result) == (
            "array 'field': ranks 0 and 1 publish the same block [0:4, 0:4]; no rank's block covers [0:4, 4:8] "
            "(every element must belong to exactly one rank)"
        )


def test_B5_block_no_rank_covers_is_named(tmp_path: Path) -> None:
    results = _publish_at(_tiled(tmp_path), [(0, 0), (0, 4), (4, 0)])
    for rank, result in enumerate(results):
        assert isinstance(result, LayoutError), f"rank {rank}: {result!r}"
        assert "array 'field': no rank's block covers [4:8, 4:8]" in str(result)


def test_B5_out_of_range_position_names_the_rank(tmp_path: Path) -> None:
    # position (5, 0) of a 2x2 grid of 4x4 blocks: offset (20, 0)
    results = _publish_at(_tiled(tmp_path), [(0, 0), (0, 4), (4, 0), (20, 0)])
    for rank, result in enumerate(results):
        assert isinstance(result, LayoutError), f"rank {rank}: {result!r}"
        assert "rank 3: array 'field' block (4, 4) at offset (20, 0) leaves the array (8, 8) along dim 0" in str(result)


def test_B5_a_good_tiling_is_accepted(tmp_path: Path) -> None:
    # the other side of the three tests above: the same ranks, placed right, post one block each
    results = _publish_at(_tiled(tmp_path), [(0, 0), (0, 4), (4, 0), (4, 4)])
    assert [[p.index for p in posted] for posted in results] == [[(0, 0)], [(0, 1)], [(1, 0)], [(1, 1)]]


def test_B5_duplicate_missing_and_out_of_range_are_listed_in_one_error(tmp_path: Path) -> None:
    results = _publish_at(_tiled(tmp_path), [(0, 0), (0, 0), (4, 0), (20, 0)])
    for rank, result in enumerate(results):
        assert isinstance(result, LayoutError), f"rank {rank}: {result!r}"
        message = str(result)
        assert "rank 3: array 'field' block (4, 4) at offset (20, 0) leaves the array" in message
        assert "ranks 0 and 1 publish the same block [0:4, 0:4]" in message
        assert "no rank's block covers [0:4, 4:8]" in message


# == B6: steps out of order or duplicated, negative or fractional ==============================


@pytest.mark.parametrize("cadence", ["{every: 1}", "{every: 1000}"], ids=["copied", "unwanted-fast-path"])
@pytest.mark.parametrize(
    ("steps", "match"),
    [
        ((2, 1), r"rank 0: array 'field' step 1 after step 2; steps must increase"),
        ((3, 3), r"rank 0: array 'field' step 3 after step 3; steps must increase"),
    ],
    ids=["out-of-order", "duplicated"],
)
def test_B6_steps_out_of_order_or_duplicated(tmp_path: Path, cadence: str, steps: tuple[int, int], match: str) -> None:
    bridge, transport = _bridge(tmp_path, FIELD + f"cadence: {cadence}\n")
    first, second = steps
    bridge.publish("field", _data(first), step=first)
    posted = list(transport.posted)
    with pytest.raises(BlockMismatchError, match=match):
        bridge.publish("field", _data(second), step=second)
    assert transport.posted == posted
    assert bridge.publish("field", _data(4), step=4) == (cadence == "{every: 1}"), "the rank goes on after a refusal"


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (-1, r"rank 0: step must be in \[0, 2\*\*63 - 1\], got -1"),
        (1.5, r"rank 0: step must be an integer, got 1.5"),
        (np.float64(2.0), r"rank 0: step must be an integer, got np.float64\(2.0\)|got 2.0"),
        (True, r"rank 0: step must be an integer, got True"),
        ("1", r"rank 0: step must be an integer, got '1'"),
    ],
    ids=["negative", "fractional", "numpy-float", "bool", "string"],
)
def test_B6_negative_or_non_integer_step_is_refused(tmp_path: Path, step: Any, match: str) -> None:
    bridge, transport = _bridge(tmp_path, FIELD)
    with pytest.raises(BlockMismatchError, match=match):
        bridge.publish("field", _data(0), step=step)
    assert transport.posted == []


def test_B6_numpy_integer_steps_are_accepted(tmp_path: Path) -> None:
    bridge, transport = _bridge(tmp_path, FIELD)
    for step in (np.uint8(1), np.int32(2), np.int64(3)):
        assert bridge.publish("field", _data(int(step)), step=step)  # type: ignore[arg-type]
    assert [(p.step, type(p.step)) for p in transport.posted] == [(1, int), (2, int), (3, int)]


def test_B6_the_error_names_the_rank_that_went_back(tmp_path: Path) -> None:
    contract = load_contract(_write(tmp_path, "arrays:\n  field: {dtype: float64, shape: [20, 10], block: [10, 10]}\n"))

    def body(comm: ThreadComm) -> Any:
        transport = InProcessTransport(contract)
        bridge = Bridge(comm, transport=transport)
        bridge.publish("field", _data(0), step=0)
        bridge.publish("field", _data(2), step=2)
        if comm.Get_rank() == 1:
            bridge.publish("field", _data(1), step=1)
        return [p.step for p in transport.posted]

    rank0, rank1 = _on_ranks(2, body)
    assert rank0 == [0, 2]
    assert isinstance(rank1, BlockMismatchError)
    assert str(rank1) == "rank 1: array 'field' step 1 after step 2; steps must increase"


# == B7: NaN or Inf in the data ================================================================

NAN_CONTRACT = """\
arrays:
  field: {dtype: float64, shape: [8, 4], block: [8, 4]}
monitors:
  - {array: field, reductions: [max, sum]}
analytics:
  - {function: max, arrays: [field]}
  - {function: sum, arrays: [field]}
"""


def _steps_with_nan() -> list[np.ndarray[Any, Any]]:
    with_nan = np.arange(32.0).reshape(8, 4)
    with_nan[1, 2], with_nan[6, 0], with_nan[7, 3] = np.nan, np.inf, np.nan
    with_inf = np.arange(32.0).reshape(8, 4) / 7
    with_inf[3, 3] = np.inf
    return [with_nan, with_inf, np.arange(32.0).reshape(8, 4) / 7]


def _run_with_nan(tmp_path: Path) -> tuple[list[np.ndarray[Any, Any]], dict[str, list[float]], list[dict[str, float]]]:
    """One run: publish the steps, then what the analytics and the monitors compute from what was posted."""
    tmp_path.mkdir()
    contract = load_contract(_write(tmp_path, NAN_CONTRACT))
    transport = InProcessTransport(contract)
    bridge = Bridge(SingleProcessComm(), transport=transport)
    for step, block in enumerate(_steps_with_nan()):
        assert bridge.publish("field", block, step=step)
    bridge.close()
    posted = [p.block for p in transport.posted]
    results: dict[str, list[float]] = {}
    for bound in bind_analytics(contract, default_registry):
        for step, block in enumerate(posted):
            value = bound.call({"field": da.from_array(block, chunks=(3, 2))}, steps=[step], times=[None])
            results.setdefault(bound.label, []).append(float(value.compute(scheduler="sync")))
    monitors = [r.values for m in transport.sent if isinstance(m, MonitorBatch) for r in m.records]
    return posted, results, monitors


def test_B7_nan_and_inf_pass_through_to_the_analytics_deterministically(tmp_path: Path) -> None:
    posted, results, monitors = _run_with_nan(tmp_path / "one")
    sent = _steps_with_nan()
    for got, expected in zip(posted, sent, strict=True):
        np.testing.assert_array_equal(got, expected)  # NaN where NaN was, Inf where Inf was
        assert (np.isnan(got) == np.isnan(expected)).all() and (np.isinf(got) == np.isinf(expected)).all()
    assert np.isnan(results["max"][0]) and np.isnan(results["sum"][0])  # the analytics see the NaN
    assert results["max"][1] == results["sum"][1] == np.inf  # and the Inf
    assert results["max"][2] == sent[2].max() and results["sum"][2] == pytest.approx(sent[2].sum(), rel=1e-15)
    assert np.isnan(monitors[0]["max(field)"]) and monitors[1]["max(field)"] == np.inf
    _, again, again_monitors = _run_with_nan(tmp_path / "two")
    for label in ("max", "sum"):  # the same values run after run, NaN included
        assert np.array_equal(results[label], again[label], equal_nan=True), label
    assert [list(m) for m in monitors] == [list(m) for m in again_monitors]
    for first, second in zip(monitors, again_monitors, strict=True):
        assert np.array_equal(list(first.values()), list(second.values()), equal_nan=True)


def test_B7_finite_flag_counts_non_finite_values_per_step(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = "arrays:\n  field: {dtype: float64, shape: [8, 4], block: [8, 4], finite: true}\n"
    contract = load_contract(_write(tmp_path, text))
    transport = InProcessTransport(contract)
    bridge = Bridge(SingleProcessComm(), transport=transport)
    block = _steps_with_nan()[0]  # 2 NaN and 1 Inf
    with caplog.at_level(logging.WARNING):
        assert bridge.publish("field", block, step=0), "flagged, still passed through"
        assert bridge.publish("field", _steps_with_nan()[2], step=1)
        bridge.close()
    reports = caplog.messages + [repr(m) for m in transport.sent]
    assert any(re.search(r"step 0\b.*\b3 non-finite", r) for r in reports), reports
    assert not any(re.search(r"step 1\b.*non-finite", r) for r in reports), reports


def test_B7_monitor_reductions_do_not_depend_on_which_rank_holds_the_nan(tmp_path: Path) -> None:
    text = "arrays:\n  field: {dtype: float64, shape: [8, 4]}\nmonitors:\n  - {array: field, reductions: [max, min]}\n"
    contract = load_contract(_write(tmp_path, text))
    data = np.arange(32.0).reshape(8, 4)
    data[6, 1] = np.nan  # in rank 1's half when two ranks share the rows

    def monitor_values(size: int) -> dict[str, float]:
        def body(comm: ThreadComm) -> list[dict[str, float]]:
            transport = InProcessTransport(contract)
            rows = 8 // size
            lo = comm.Get_rank() * rows
            with Bridge(comm, transport=transport) as bridge:
                bridge.publish("field", np.ascontiguousarray(data[lo : lo + rows]), step=0, offset=(lo, 0))
            return [r.values for m in transport.sent if isinstance(m, MonitorBatch) for r in m.records]

        (values,) = _on_ranks(size, body)[0]
        return values

    one, two = monitor_values(1), monitor_values(2)
    assert np.isnan(one["max(field)"]) and np.isnan(one["min(field)"])  # numpy's answer for the whole array
    assert np.isnan(two["max(field)"]), two
    assert np.isnan(two["min(field)"]), two


# == B8: a block close to or larger than the object store ======================================

MiB = 1024 * 1024


def test_B8_block_over_a_fraction_of_the_object_store_is_warned_with_sizes_and_still_copied(tmp_path: Path) -> None:
    """Ray takes an object larger than its store (on disk), so the block is copied; the rank is told why it is slow."""
    text = "arrays:\n  field: {dtype: float64, shape: [2048, 2048]}\nbackpressure: {max_store_fraction: 0.5}\n"
    contract = load_contract(_write(tmp_path, text))
    transport = InProcessTransport(contract, store_bytes=48 * MiB)
    bridge = Bridge(SingleProcessComm(), transport=transport)
    block = np.zeros((2048, 2048))  # 32 MiB, over half of a 48 MiB store; np.zeros touches no page
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert bridge.publish("field", block, step=0, offset=(0, 0))
        assert bridge.publish("field", block, step=1, offset=(0, 0))
    said = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    assert said == [
        "rank 0: a block of 'field' is 32.0 MiB, over 0.5 of its node's object store (48.0 MiB; "
        "backpressure.max_store_fraction): Ray will write it to disk. Copy less (select, preprocess: downsample), "
        "spread the array over more ranks, or give Ray a larger store (ray start --object-store-memory)"
    ], "once, when the array's staging opens"
    assert [p.step for p in transport.posted] == [0, 1]


def test_B8_a_block_under_the_fraction_or_a_store_of_unknown_size_is_not_warned(tmp_path: Path) -> None:
    text = "arrays:\n  field: {dtype: float64, shape: [2048, 2048]}\n"  # default fraction 0.8: 32 of 48 MiB is under
    contract = load_contract(_write(tmp_path, text))
    for store in (48 * MiB, None):
        bridge = Bridge(SingleProcessComm(), transport=InProcessTransport(contract, store_bytes=store))
        with warnings.catch_warnings():
            warnings.simplefilter("error", StoreWarning)
            assert bridge.publish("field", np.zeros((2048, 2048)), step=0, offset=(0, 0))


@pytest.mark.parametrize("fraction", [0, 1.5, "half"])
def test_B8_the_fraction_is_checked_with_the_contract(tmp_path: Path, fraction: object) -> None:
    text = f"arrays:\n  field: {{dtype: float64, shape: [4]}}\nbackpressure: {{max_store_fraction: {fraction}}}\n"
    with pytest.raises(ContractError, match=r"contract.yaml:3:\d+: backpressure\.max_store_fraction"):
        load_contract(_write(tmp_path, text))


# == B9: duplicate analytic names ==============================================================


def _first(x: Any) -> Any:
    return x.max()


def _second(x: Any) -> Any:
    return x.min()


def test_B9_duplicate_analytic_name_names_the_existing_one() -> None:
    registry = Registry()
    registry.analytic("stat")(_first)
    with pytest.raises(AnalyticsError, match=r"'stat' is already registered by _first; choose another name"):
        registry.analytic("stat")(_second)
    assert registry.get("stat").fn is _first, "the first registration stays"
    with pytest.raises(AnalyticsError, match=r"'max' is already registered by maximum"):
        default_registry.analytic("max")(_second)
    assert default_registry.get("max").fn.__name__ == "maximum"


def test_B9_same_function_under_two_names_is_allowed() -> None:
    registry = Registry()
    registry.analytic("peak")(_first)
    registry.analytic("top")(_first)
    assert list(registry) == ["peak", "top"]
    assert registry.get("peak").fn is registry.get("top").fn is _first


def test_B9_contract_calls_one_function_twice_only_under_distinct_names(tmp_path: Path) -> None:
    twice = ARRAY + "analytics:\n  - {function: mean, arrays: [temp]}\n  - {function: mean, arrays: [temp]}\n"
    path = _write(tmp_path, twice)
    message = _load_error(path)
    assert f"{path}:8:6: analytics[1].function: " in message and "already used by analytics[0]" in message
    named = (
        ARRAY
        + "analytics:\n  - {function: mean, arrays: [temp], name: a}\n  - {function: mean, arrays: [temp], name: b}\n"
    )
    bound = bind_analytics(load_contract(_write(tmp_path, named, "named.yaml")), default_registry)
    assert [(b.label, b.analytic.name) for b in bound] == [("a", "mean"), ("b", "mean")]


# == B10: a trigger or analytic refers to an unknown array or window ===========================


@pytest.mark.parametrize(
    ("section", "says"),
    [
        (
            "triggers:\n  - {name: t, when: 'max(temp2) > 3', action: {cadence: {every: 1}}}\n",
            "7:15: triggers[0].when: max() needs an array name, got 'temp2' in expression 'max(temp2) > 3'; "
            "known arrays: ['temp']",
        ),
        (
            "triggers:\n  - {name: t, when: 'step > 3', until: 'min(temp2) < 0', action: {cadence: {every: 1}}}\n",
            "7:33: triggers[0].until: min() needs an array name, got 'temp2'",
        ),
        (
            "triggers:\n  - {name: t, when: 'step > 3', action: {cadence: {every: 1}, arrays: [temp2]}}\n",
            "triggers[0].action.arrays[0]: unknown array 'temp2'; known arrays: temp",
        ),
        (
            "analytics:\n  - {function: mean, arrays: [temp2]}\n",
            "analytics[0].arrays[0]: unknown array 'temp2'; known arrays: temp",
        ),
        (
            "monitors:\n  - {array: temp2, reductions: [max]}\n",
            "monitors[0].array: unknown array 'temp2'; known arrays: temp",
        ),
    ],
    ids=["trigger-when", "trigger-until", "trigger-action", "analytic", "monitor"],
)
def test_B10_unknown_array_is_refused_at_load_listing_the_known_names(tmp_path: Path, section: str, says: str) -> None:
    path = _write(tmp_path, ARRAY + section)
    assert f"{path}:" in (message := _load_error(path))
    assert says in message


def test_B10_window_longer_than_the_array_keeps_is_refused_at_load(tmp_path: Path) -> None:
    text = ARRAY + "    window: 5\nanalytics:\n  - function: mean\n    arrays: [temp]\n    window: 10\n"
    path = _write(tmp_path, text)
    assert (
        f"{path}:10:5: analytics[0].window: mean asks for window 10 on 'temp', which keeps 5; "
        "raise arrays.temp.window or lower the analytic's window"
    ) in _load_error(path)
    load_contract(_write(tmp_path, text.replace("window: 10", "window: 5"), "ok.yaml"))  # at the limit: fine


# == B11: injection through a trigger expression ===============================================

INJECTIONS = [
    ("import", "__import__('os').system('touch {marker}')", "calling anything but a reduction or function name"),
    ("subclasses", "().__class__.__bases__[0].__subclasses__()", "calling anything but a reduction or function name"),
    ("attribute", "temp.__class__", "attribute access is not allowed in expression 'temp.__class__'"),
    ("parentheses", "(" * 100_000 + "1" + ")" * 100_000, "String should have at most 1000 characters"),
    ("megabyte", "1" + " + 1" * 250_000, "String should have at most 1000 characters"),
    ("nested", "(" * 40 + "step" + ")" * 40 + " > 1", "expression is nested too deeply (limit 32 parentheses)"),
]


@pytest.mark.parametrize(("expression", "says"), [i[1:] for i in INJECTIONS], ids=[i[0] for i in INJECTIONS])
def test_B11_injection_in_a_trigger_is_refused_at_load(tmp_path: Path, expression: str, says: str) -> None:
    marker = tmp_path / "marker-file"
    path = _write(tmp_path, _trigger(expression.replace("{marker}", str(marker))))
    message = _load_error(path)
    assert f"{path}:8:5: triggers[0].when: {says}" in message
    assert not marker.exists()


def test_B11_eval_and_exec_are_never_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[str] = []

    def spy(name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            called.append(name)
            raise AssertionError(f"{name} was called")

        return refuse

    monkeypatch.setattr(builtins, "eval", spy("eval"))
    monkeypatch.setattr(builtins, "exec", spy("exec"))
    for name, expression, _ in INJECTIONS:
        with pytest.raises(ContractError):
            load_contract(_write(tmp_path, _trigger(expression.replace("{marker}", "m")), f"{name}.yaml"))
    good = parse_expression("max(temp) > 3 and step % 2 == 0", arrays=["temp"])
    assert good.evaluate({("max", "temp"): 4.0}, step=2, time=None) is True
    monkeypatch.undo()
    assert called == []
    assert "S307" in _selected_rules()  # ruff's gate on eval()
    package = ROOT / "doreisa"
    calls = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sorted(package.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"eval", "exec"}
    ]
    assert calls == []


def test_B11_recursion_error_in_the_parser_is_a_contract_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_parse = ast.parse

    def parse(source: str, *args: Any, **kwargs: Any) -> Any:
        if source == "step > 1":  # as the parser does on input nested deeper than the stack allows
            raise RecursionError("maximum recursion depth exceeded")
        return real_parse(source, *args, **kwargs)

    monkeypatch.setattr(expressions.ast, "parse", parse)
    path = _write(tmp_path, _trigger("step > 1"))
    with pytest.raises(ContractError) as info:
        load_contract(path)
    monkeypatch.undo()
    assert f"{path}:8:5: triggers[0].when: expression is nested too deeply (limit 32)" in str(info.value)


# == B12: rank and contract disagree ===========================================================


def test_B12_unknown_array_at_publish_lists_the_known_arrays(tmp_path: Path) -> None:
    bridge, transport = _bridge(tmp_path, FIELD + "  temp: {dtype: float32, shape: [4]}\n")
    with pytest.raises(
        BlockMismatchError, match=r"rank 0: array 'pressure' is not in the contract; known arrays: \['field', 'temp'\]"
    ):
        bridge.publish("pressure", _data(0), step=0)
    assert transport.posted == [] and transport.sent == []


def test_B12_the_rank_naming_an_unknown_array_is_named(tmp_path: Path) -> None:
    contract = load_contract(_write(tmp_path, "arrays:\n  field: {dtype: float64, shape: [20, 10], block: [10, 10]}\n"))

    def body(comm: ThreadComm) -> Any:
        transport = InProcessTransport(contract)
        bridge = Bridge(comm, transport=transport)
        bridge.publish("field", _data(0), step=0)
        if comm.Get_rank() == 1:
            bridge.publish("pressure", _data(1), step=1)
        return len(transport.posted)

    posted, error = _on_ranks(2, body)
    assert posted == 1
    assert isinstance(error, BlockMismatchError)
    assert str(error) == "rank 1: array 'pressure' is not in the contract; known arrays: ['field']"


def test_B12_fewer_ranks_than_the_contract_tiles_names_every_rank(tmp_path: Path) -> None:
    contract = _tiled(tmp_path)  # block [4, 4] on [8, 8]: 4 ranks

    def body(comm: ThreadComm) -> Any:
        Bridge(comm, transport=InProcessTransport(contract)).publish("field", np.zeros((4, 4)), step=0)

    for result in _on_ranks(3, body):
        assert isinstance(result, LayoutError), repr(result)
        message = str(result)
        for rank in range(3):
            assert (
                f"rank {rank}: array 'field': block [4, 4] tiles shape [8, 8] into 4 blocks but there are 3 ranks"
                in (message)
            )


@pytest.mark.ray
@pytest.mark.mpi
def test_B12_a_simulation_of_three_ranks_for_four_declared_ends_with_a_clear_error_in_time(ray_cluster: Any) -> None:
    text = """
arrays:
  field: {dtype: float64, shape: [16, 16]}
timeouts: {connect: 20, step: 30}
analytics:
  - {function: sum, arrays: [field]}
"""
    # 3 real MPI ranks that keep publishing for longer than the deadline; the runtime waits for 4. The connect
    # deadline leaves loaded machines time to start the ranks (2 s did not, with two CPU hogs beside the test)
    command = [mpiexec(), "-n", "3", sys.executable, str(FILL), "--steps", "60", "--sleep", "0.1"]
    started = time.monotonic()
    # the ranks say they are 3 when they join: no need to wait for the connect deadline (the unit tests
    # of RunWatch cover ranks of the right world that never connect)
    with pytest.raises(
        RuntimeUnavailableError, match=r"^ranks report a communicator of 3 ranks, but the run expects 4"
    ):
        run_coupled(text, command, nranks=4, use_mpi=False, timeout=30)
    assert time.monotonic() - started < 20, "ended as the ranks joined, before the connect deadline (20 s)"

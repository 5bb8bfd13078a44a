"""summary.json from what a session saw: counts per step, not per rank; why a run is not ok; warnings."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Any

from doreisa.runtime.cluster.driver import Failures
from doreisa.runtime.cluster.results import OutputFailure
from doreisa.runtime.cluster.summary import format_summary, run_summary
from doreisa.runtime.cluster.watch import RunState
from doreisa.runtime.protocol import NodeCounts, RankClosed, RankError, RankJoined, RankLost, RankStats, StepLost


def _session(state: RunState, *, analysed: dict[str, int], windows: dict[str, int], nodes: Any = ()) -> Any:
    bound = [SimpleNamespace(label=label, arrays=("field",), window=w) for label, w in windows.items()]
    driver = SimpleNamespace(failures=Failures(), counts=SimpleNamespace(steps=analysed, calls=sum(analysed.values())))
    return SimpleNamespace(
        state=state,
        driver=driver,
        bound=bound,
        last_node_counts=list(nodes),
        cpu_started=time.process_time(),
        cuts=SimpleNamespace(misses=1, hits=2),
        results=SimpleNamespace(count=3, unsaved=0, failures={}, first_at=None),
        provenance=SimpleNamespace(records=[]),
    )


def _closed(n: int, **stats: Any) -> RunState:
    state = RunState()
    for rank in range(n):
        state.record(RankJoined(rank, n, "node"))
        state.record(RankClosed(rank, "node", RankStats(**stats)))
    return state


def test_skipped_and_dropped_steps_are_counted_per_step() -> None:
    skipped = (("field", 3), ("field", 7))
    state = _closed(2, published=8, skipped=2, skipped_steps=skipped, dropped=1)
    summary = run_summary(_session(state, analysed={"field": 8}, windows={}), None, None, [], 1.0)
    assert (summary["steps_skipped"], summary["skipped"]) == (2, [("field", 3), ("field", 7)])  # not 4
    assert (summary["steps_dropped"], summary["blocks_dropped"]) == (1, 2)
    assert summary["ok"] is False  # a dropped step is a block the analytics never got
    assert summary["error"] == "1 step(s) dropped: ranks lost the analytics and went on without them"


def test_a_failed_run_says_why_when_nothing_ended_it_early() -> None:
    state = _closed(3, published=4)
    state.record(RankJoined(3, 4, "node"))
    state.record(RankLost(3, "node"))
    state.lost_steps.append(StepLost("field", 6, 3, 4, (0, 1, 2)))
    summary = run_summary(_session(state, analysed={"field": 4}, windows={}), None, None, [], 1.0)
    assert summary["ok"] is False
    assert summary["error"] == "ranks [3] disconnected without close() (the first died first)"
    assert summary["ranks_lost"] == [3]


def test_blocks_published_are_what_the_node_actors_took_even_from_ranks_that_died() -> None:
    state = RunState()
    state.record(RankJoined(0, 1, "node"))
    state.record(RankLost(0, "node"))
    nodes = [NodeCounts("a", 5, 5 * 64, 1, 5, 0.01), NodeCounts("b", 2, 2 * 64, 1, 2, 0.01)]
    summary = run_summary(_session(state, analysed={"field": 5}, windows={}, nodes=nodes), None, None, [], 1.0)
    assert summary["blocks_published"] == 7


def test_an_analytic_whose_window_never_filled_is_a_warning() -> None:
    state = _closed(1, published=3)
    session = _session(state, analysed={"field": 3}, windows={"trend": 5, "mean": 1})
    summary = run_summary(session, None, None, [], 1.0)
    assert summary["ok"] is True
    assert summary["warnings"] == [
        "analytic trend was never called: its window is 5 steps and the run analysed fewer ('field': 3); "
        "lower its window or run longer"
    ]
    assert "  ? analytic trend was never called" in format_summary(summary)


def test_what_could_not_be_stopped_fails_the_run_and_is_listed() -> None:
    state = _closed(1, published=1)
    summary = run_summary(_session(state, analysed={"field": 1}, windows={}), None, None, ["the head actor died"], 1.0)
    assert (summary["ok"], summary["error"]) == (False, "the head actor died")
    assert summary["errors"] == [{"kind": "shutdown", "error": "the head actor died"}]


def test_an_output_format_that_lost_results_fails_the_run_and_is_shown() -> None:
    session = _session(_closed(1, published=4), analysed={"field": 4}, windows={})
    session.results.failures = {"zarr": OutputFailure("zarr", 12, "OutputError: zarr: could not write 'mean'")}
    summary = run_summary(session, None, None, [], 1.0)
    assert summary["ok"] is False
    assert summary["output_failures"] == [
        {"format": "zarr", "lost": 12, "error": "OutputError: zarr: could not write 'mean'"}
    ]
    assert (
        summary["error"] == "output format 'zarr' lost 12 result(s); first: OutputError: zarr: could not write 'mean'"
    )
    assert "  ! output format 'zarr' lost 12 result(s)" in format_summary(summary)


def test_the_first_result_is_timed_from_the_launch_and_shown_with_the_wall_time() -> None:
    session = _session(_closed(2), analysed={"field": 3}, windows={})
    session.results.first_at = 102.25
    summary = run_summary(session, None, None, [], 7.5, started=100.0)
    assert summary["first_result_s"] == 2.25
    assert "  wall time                              7.5 s (first result after 2.2 s)\n" in format_summary(summary)
    nothing = _session(_closed(2), analysed={}, windows={})
    assert run_summary(nothing, None, None, [], 7.5, started=100.0)["first_result_s"] is None


def test_blocks_refused_by_rays_store_are_counted_and_the_runs_error() -> None:
    state = _closed(2)
    said = "node 0a1b2c3d could not store the blocks of 'field' at step 9 from ranks [0, 1] (OutOfDiskError: full)"
    state.errors.append(RankError(0, "node", said))
    state.lost_steps.append(StepLost("field", 12, 1, 2, (1,)))
    nodes = [NodeCounts("n0", 18, 1 << 20, 2, 9, 0.1, not_stored=6, store_error=said)]
    summary = run_summary(_session(state, analysed={"field": 9}, windows={}, nodes=nodes), None, None, [], 1.0)
    assert summary["blocks_not_stored"] == 6 and summary["blocks_published"] == 18
    assert summary["error"] == f"6 block(s) could not be stored in Ray's object store: {said}", "before the lost step"
    assert re.search(r"\n  blocks not stored \(Ray's store full\) +6\n", format_summary(summary))

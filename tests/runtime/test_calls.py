"""The facade over Ray: a dead, stuck or failing actor becomes a ClusterError naming it; a session stops anyway."""

from __future__ import annotations

import time
from typing import Any

import pytest
import ray

from doreisa.contract import parse_contract
from doreisa.errors import ClusterError
from doreisa.runtime.cluster.calls import ask, kill
from doreisa.runtime.cluster.session import Session

pytestmark = pytest.mark.ray


def _actor() -> Any:
    class Sleepy:  # defined here: Ray ships it by value (workers cannot import this test module)
        def nap(self, seconds: float) -> str:
            time.sleep(seconds)
            return "rested"

        def fail(self) -> None:
            raise ValueError("a bug in the actor")

    return ray.remote(num_cpus=0)(Sleepy).remote()


def test_an_answer_comes_back(ray_cluster: Any) -> None:
    assert ask(_actor().nap.remote(0), what="sleepy actor", timeout=60) == "rested"


def test_a_dead_actor_is_named(ray_cluster: Any) -> None:
    actor = _actor()
    kill(actor, what="sleepy actor")
    with pytest.raises(ClusterError, match=r"^the sleepy actor died at step 7: ") as caught:
        ask(actor.nap.remote(0), what="sleepy actor", timeout=60, step=7)
    assert (caught.value.actor, caught.value.step) == ("sleepy actor", 7)
    kill(actor, what="sleepy actor")  # twice: never raises


def test_a_stuck_actor_is_named_after_its_deadline(ray_cluster: Any) -> None:
    actor = _actor()
    with pytest.raises(ClusterError, match=r"the sleepy actor did not answer within 0.2 s; is the Ray cluster"):
        ask(actor.nap.remote(30), what="sleepy actor", timeout=0.2)
    kill(actor, what="sleepy actor")


def test_an_actor_that_raises_is_a_cluster_error(ray_cluster: Any) -> None:
    with pytest.raises(ClusterError, match=r"the sleepy actor failed: .*a bug in the actor"):
        ask(_actor().fail.remote(), what="sleepy actor", timeout=60)


def test_a_session_stops_whatever_died_and_removes_its_run_folder(ray_cluster: Any) -> None:
    session = Session(parse_contract("arrays:\n  t: {dtype: float64, shape: [4]}\n"))
    session.start()
    assert session.run_dir.is_dir()
    kill(session._head, what="head actor")
    kill(session._nodes[0], what="node actor")
    with pytest.raises(ClusterError, match=r"^the head actor died"):
        for _ in range(100):  # Ray may take a moment to report the kill
            session.poll(timeout=0.05)
    problems = session.stop()
    assert any(p.startswith(f"the {session_node}") for p in problems for session_node in ("node actor on node",))
    assert any(p.startswith("the head actor died") for p in problems)
    assert not session.run_dir.exists()
    assert session.stop() == []  # twice: nothing left to do

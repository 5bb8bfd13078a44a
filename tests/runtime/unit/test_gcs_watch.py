"""The watch on the Ray head node's GCS (reliability case F12), with a stand-in for the TCP connection."""

from __future__ import annotations

from typing import Any

import pytest

from doreisa.errors import ClusterError
from doreisa.runtime.cluster.calls import GcsWatch


class Connections:
    """Answers connections as told: True accepted, False refused; records where and with which timeout."""

    def __init__(self, *answers: bool) -> None:
        self.answers, self.calls = list(answers), []

    def __call__(self, where: tuple[str, int], timeout: float) -> Any:
        self.calls.append((where, timeout))
        if not self.answers.pop(0):
            raise ConnectionRefusedError(111, "Connection refused")
        return self

    def close(self) -> None:
        pass


def test_the_gcs_is_lost_after_refusals_in_a_row_and_a_success_starts_the_count_again() -> None:
    connect = Connections(False, False, True, False, False, False)
    watch = GcsWatch("127.0.0.1:6379", every=1.0, misses=3, connect=connect)
    for now in (0.0, 1.0, 2.0, 3.0, 4.0):
        watch.check(now)
    with pytest.raises(ClusterError, match=r"GCS at 127\.0\.0\.1:6379 is gone \(3 connections refused in a row") as err:
        watch.check(5.0)
    assert err.value.actor == "GCS"
    assert connect.calls == [(("127.0.0.1", 6379), 1.0)] * 6


def test_the_gcs_is_asked_at_most_once_per_interval() -> None:
    connect = Connections(*[False] * 3)
    watch = GcsWatch("[::1]:6379", every=2.0, misses=2, connect=connect)
    watch.check(10.0)
    watch.check(10.5)
    watch.check(11.9)
    assert len(connect.calls) == 1 and connect.calls[0][0] == ("::1", 6379)
    with pytest.raises(ClusterError):
        watch.check(12.0)

"""``placement: auto`` on one node, without Ray: when a step goes in transit, and what is reported."""

from __future__ import annotations

from doreisa.runtime.cluster.placement import AutoPlacement
from doreisa.runtime.protocol import PlacementChanged

MiB = 2**20


def test_steps_go_in_transit_past_the_fraction_and_come_back_as_the_analytics_finish() -> None:
    auto = AutoPlacement("node-a", {"t": 0.5}, 10 * MiB)  # 5 MiB of steps in situ not analysed yet
    assert "t" in auto and "u" not in auto
    assert auto.in_transit("t", 0, 2 * MiB) == (False, PlacementChanged("node-a", "t", 0, "in_situ", 0, 10 * MiB))
    assert auto.in_transit("t", 1, 2 * MiB) == (False, None)  # 4 MiB: fits
    assert auto.in_transit("t", 2, 2 * MiB) == (
        True,
        PlacementChanged("node-a", "t", 2, "in_transit", 4 * MiB, 10 * MiB),
    )
    assert auto.in_transit("t", 3, 1 * MiB) == (False, PlacementChanged("node-a", "t", 3, "in_situ", 4 * MiB, 10 * MiB))
    assert auto.in_transit("t", 4, 1 * MiB) == (
        True,
        PlacementChanged("node-a", "t", 4, "in_transit", 5 * MiB, 10 * MiB),
    )
    auto.done([("t", 0), ("t", 2), ("t", 99)])  # step 2 went in transit: it never counted
    assert auto.in_transit("t", 5, 2 * MiB) == (False, PlacementChanged("node-a", "t", 5, "in_situ", 3 * MiB, 10 * MiB))


def test_a_step_of_several_groups_counts_once_per_group_and_an_unknown_store_keeps_everything_in_situ() -> None:
    auto = AutoPlacement("node-a", {"t": 1.0}, 4 * MiB)
    auto.in_transit("t", 0, 2 * MiB)
    assert auto.in_transit("t", 0, 2 * MiB)[0] is False, "a second group of the same step: 4 MiB, at the fraction"
    assert auto.in_transit("t", 1, 1)[0] is True
    unknown = AutoPlacement("node-b", {"t": 0.01}, None)
    assert [unknown.in_transit("t", s, 10**12)[0] for s in range(3)] == [False, False, False]

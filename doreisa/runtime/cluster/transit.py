"""In transit: the actor on an analytics node that receives blocks from the simulation's node actors,
and the session's view of the analytics nodes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from doreisa.contract import Contract
from doreisa.errors import RuntimeUnavailableError
from doreisa.runtime.protocol import CompleteStep, TransitCounts


class TransitActor:
    """On an analytics node: receives in-transit blocks; its return values are the blocks, stored here."""

    def __init__(self) -> None:
        self.blocks = 0
        self.bytes = 0

    def relay(self, blocks: np.ndarray[Any, Any] | list[np.ndarray[Any, Any]]) -> Any:
        """Return the block (or blocks): Ray stores the return value in this node's object store."""
        each = blocks if isinstance(blocks, list) else [blocks]
        self.blocks += len(each)
        self.bytes += sum(b.nbytes for b in each)
        return blocks

    def counts(self) -> TransitCounts:
        """Blocks and bytes received."""
        return TransitCounts(self.blocks, self.bytes)

    def node_id(self) -> str:
        """The Ray node this actor runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()


#: The placements whose blocks may leave the simulation's nodes (for analytics nodes, with a transit actor each).
AWAY = ("in_transit", "auto")


class AnalyticsNodes:
    """A run's analytics nodes (in transit, ``auto``): which they are, their transit actors, and those lost.

    Parameters
    ----------
    contract : Contract
        Says which arrays may leave the simulation's nodes, and the resource their analytics nodes carry.
    """

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.actors: list[tuple[Any, str]] = []  # (transit actor, its node's id)
        #: analytics nodes whose transit actor died mid-run: the blocks relayed there are lost
        self.lost: set[str] = set()

    def resources(self, arrays: Iterable[str], modes: tuple[str, ...] = ("in_transit",)) -> set[str]:
        """The resources of the analytics nodes of ``arrays`` placed in one of ``modes`` (the analytics of
        ``in_transit`` arrays run there; those of ``auto`` arrays follow their blocks, wherever each step went)."""
        return {p.analytics_resource for a in arrays if (p := self.contract.placement_of(a)).mode in modes}

    @property
    def away(self) -> list[str]:
        """The arrays whose blocks may leave their node."""
        return [a for a in self.contract.arrays if self.contract.placement_of(a).mode in AWAY]

    def start(self, alive: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Start a transit actor on each analytics node among ``alive`` (Ray's node records); return those nodes.

        Raises
        ------
        RuntimeUnavailableError
            If arrays may leave their node but no node carries their analytics resource.
        """
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        away = self.away
        if not away:
            return []
        wanted = self.resources(self.contract.arrays, AWAY)
        analytics = [node for node in alive if any(node["Resources"].get(r, 0) > 0 for r in wanted)]
        if not analytics:
            resources = sorted(self.resources(away, AWAY))
            raise RuntimeUnavailableError(
                f"arrays {away} are placed in_transit or auto, but no Ray node has the resource {resources}; "
                f"start analytics nodes with: ray start --address=... --resources='{{\"{resources[0]}\": 1}}'"
            )
        transit_cls = ray.remote(TransitActor)
        for node in analytics:
            pin = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
            self.actors.append((transit_cls.options(num_cpus=0, scheduling_strategy=pin).remote(), node["NodeID"]))
        return analytics

    @property
    def named(self) -> list[tuple[Any, str, str]]:
        """(actor, name, node id) of each transit actor, for the session's watch."""
        return [(actor, self.name(node), node) for actor, node in self.actors]

    @staticmethod
    def name(node: str) -> str:
        """How errors and the watch name the transit actor of ``node``."""
        return f"transit actor on node {node[:8]}"

    def has(self, name: str) -> bool:
        """Whether ``name`` (an actor the watch named) is one of these transit actors."""
        return any(self.name(node) == name for _, node in self.actors)

    def drop(self, name: str) -> str:
        """Forget the transit actor ``name`` (it died): its node is lost; return the node's id."""
        (node,) = [node for _, node in self.actors if self.name(node) == name]
        self.actors = [(actor, n) for actor, n in self.actors if n != node]
        self.lost.add(node)
        return node

    def holds_lost(self, step: CompleteStep) -> list[tuple[int, ...]]:
        """The blocks of ``step`` relayed to an analytics node lost since: they cannot be read any more."""
        return [index for index, node in step.nodes.items() if node in self.lost]

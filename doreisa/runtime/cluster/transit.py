"""In transit: the actor on an analytics node that receives blocks from the simulation's node actors."""

from __future__ import annotations

from typing import Any

import numpy as np

from doreisa.runtime.protocol import TransitCounts


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

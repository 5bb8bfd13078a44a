"""The doreisa exception tree.

::

    DoreisaError
     ├── ContractError(ValueError)      the contract file or model is invalid
     │    └── ExpressionError           a trigger or monitor expression is invalid
     ├── AnalyticsError                 registering, binding or running analytics
     ├── BridgeError(RuntimeError)      simulation <-> runtime transport
     │    ├── BlockMismatchError        a block disagrees with the contract (dtype, shape, offset)
     │    ├── LayoutError               the ranks' blocks overlap, leave holes or leave the array
     │    ├── RuntimeUnavailableError   the analytics runtime cannot be reached in time
     │    └── DeviceUnavailableError    a block in device memory, and no library here to read it (CuPy)
     ├── ProtocolError(RuntimeError)    a message between doreisa's processes is unknown or malformed
     ├── StallError(RuntimeError)       ranks never reach a collective the other ranks wait in
     ├── ClusterError(RuntimeError)     the Ray side failed: an actor died, or did not answer in time
     └── OutputError(OSError)           an output format could not write results

    StoreWarning(UserWarning)           blocks that will not fit Ray's object store (written to disk)

Every message says what was wrong, where, and what to do.
"""

from __future__ import annotations


class DoreisaError(Exception):
    """Base class of every error raised by doreisa."""


class ContractError(DoreisaError, ValueError):
    """The contract (YAML file or model) is invalid."""


class ExpressionError(ContractError):
    """A trigger or monitor expression is not in the safe expression language."""


class AnalyticsError(DoreisaError):
    """An analytic could not be registered, bound to the contract, or run."""


class BridgeError(DoreisaError, RuntimeError):
    """The simulation side could not hand data to the analytics runtime."""


class BlockMismatchError(BridgeError, ValueError):
    """A published block disagrees with the contract (dtype, shape, offset, step order)."""


class LayoutError(BridgeError, ValueError):
    """The blocks of the ranks do not tile the array: overlaps, holes or out of bounds."""


class RuntimeUnavailableError(BridgeError):
    """The analytics runtime could not be reached before the deadline."""


class StoreWarning(UserWarning):
    """A block, or what a node's ranks keep in flight, is over ``backpressure.max_store_fraction`` of the store."""


class DeviceUnavailableError(BridgeError):
    """A block in GPU memory was published, and nothing here can read it: install ``doreisa[gpu]`` (CuPy)."""


class ProtocolError(DoreisaError, RuntimeError):
    """A message between doreisa's processes is of an unknown type or malformed."""


class StallError(DoreisaError, RuntimeError):
    """The simulation stalled: ranks never reached a collective call the other ranks wait in."""


class ClusterError(DoreisaError, RuntimeError):
    """The Ray side of a run failed: an actor or a node died, or did not answer before its deadline.

    Attributes
    ----------
    actor : str
        What failed (``"head"``, ``"node actor on <node id>"``, ...).
    step : int or None
        The step being handled, when there was one.
    transient : bool
        Ray said the actor is unavailable for now (it is restarting, or a connection broke), not that
        it died: the same call may be answered later (a call in flight may or may not have run).
    """

    def __init__(self, message: str, *, actor: str, step: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.actor = actor
        self.step = step
        self.transient = transient


class OutputError(DoreisaError, OSError):
    """An output format (``outputs.formats``) could not write results.

    Attributes
    ----------
    lost : int
        How many results it could not write (a store writing in batches loses a batch).
    """

    def __init__(self, message: str, *, lost: int = 1) -> None:
        super().__init__(message)
        self.lost = lost


__all__ = [
    "AnalyticsError",
    "BlockMismatchError",
    "BridgeError",
    "ClusterError",
    "ContractError",
    "DeviceUnavailableError",
    "DoreisaError",
    "ExpressionError",
    "LayoutError",
    "OutputError",
    "ProtocolError",
    "RuntimeUnavailableError",
    "StallError",
    "StoreWarning",
]

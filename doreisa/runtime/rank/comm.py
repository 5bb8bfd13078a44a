"""What doreisa needs from an MPI communicator, and a one-process stand-in."""

from __future__ import annotations

from typing import Any, Protocol

from doreisa.errors import BridgeError


class Communicator(Protocol):
    """What doreisa needs from an MPI communicator; ``mpi4py.MPI.Comm`` satisfies it."""

    def Get_rank(self) -> int: ...
    def Get_size(self) -> int: ...
    def allgather(self, obj: Any, /) -> list[Any]: ...
    def bcast(self, obj: Any, /, root: int = 0) -> Any: ...


class SingleProcessComm:
    """A communicator of one rank, for simulations that do not use MPI."""

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 1

    def allgather(self, obj: Any, /) -> list[Any]:
        return [obj]

    def bcast(self, obj: Any, /, root: int = 0) -> Any:
        return obj

    def Split(self, color: int = 0, key: int = 0) -> SingleProcessComm:
        return self


def sub_comm(comm: Communicator, ranks: tuple[int, ...]) -> Communicator | None:
    """Collective over ``comm``: a communicator of ``ranks`` (in their order), or None on the other ranks.

    Uses ``comm.Split`` (``mpi4py.MPI.Comm`` has it); an array the contract gives to a subset of the
    ranks (``ranks:``) runs its collectives on it, so the other ranks never take part.
    """
    split = getattr(comm, "Split", None)
    if split is None:
        raise BridgeError(
            f"the contract gives arrays to a subset of the ranks ({list(ranks)}), which needs a communicator "
            f"with Split(); {type(comm).__name__} has none: pass an mpi4py communicator"
        )
    rank = comm.Get_rank()
    member = rank in ranks
    sub = split(0 if member else 1, rank)
    if member:
        return sub
    free = getattr(sub, "Free", None)
    if free is not None:
        free()
    return None


def world_comm() -> Communicator:
    """``MPI.COMM_WORLD`` if mpi4py can be imported and MPI is initialised, else a one-rank stand-in."""
    try:
        from mpi4py import MPI
    except ImportError:
        return SingleProcessComm()
    return MPI.COMM_WORLD  # type: ignore[return-value]

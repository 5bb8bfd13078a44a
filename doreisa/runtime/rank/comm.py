"""What doreisa needs from an MPI communicator, and a one-process stand-in."""

from __future__ import annotations

from typing import Any, Protocol


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


def world_comm() -> Communicator:
    """``MPI.COMM_WORLD`` if mpi4py can be imported and MPI is initialised, else a one-rank stand-in."""
    try:
        from mpi4py import MPI
    except ImportError:
        return SingleProcessComm()
    return MPI.COMM_WORLD  # type: ignore[return-value]

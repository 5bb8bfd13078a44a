"""Several blocks per rank, blocks that do not form a rectilinear grid, and an array on some ranks.

Run on 4 ranks with ``examples/contracts/ranks.yaml``::

    doreisa run examples/contracts/ranks.yaml --np 4 --output out/tiles -- python examples/tiles/sim.py

* ``density`` (64 x 32): rank r owns rows 16r to 16r + 16 as two blocks side by side, cut at
  column 16 on even ranks and column 8 on odd ones (a brick layout): ``publish_blocks``.
* ``tracer`` (32 x 16): only ranks 1 and 2 own it (``ranks: "1-2"``); ranks 0 and 3 never
  call ``publish`` for it.

Global values are ``step + 1000 * i + j`` (tracer: ``step + 100 * i + j``), so every result
can be checked exactly.
"""

from __future__ import annotations

import argparse

import numpy as np
from mpi4py import MPI

import doreisa

DENSITY, TRACER = (64, 32), (32, 16)


def density(step: int) -> np.ndarray:
    """The whole density field at ``step``."""
    i, j = np.meshgrid(np.arange(DENSITY[0]), np.arange(DENSITY[1]), indexing="ij")
    return step + 1000.0 * i + j


def tracer(step: int) -> np.ndarray:
    """The whole tracer field at ``step``."""
    i, j = np.meshgrid(np.arange(TRACER[0]), np.arange(TRACER[1]), indexing="ij")
    return step + 100.0 * i + j


def density_blocks(rank: int) -> list[tuple[int, int, int, int]]:
    """Rank ``rank``'s blocks of density as (row, col, rows, cols): two per rank, staggered cuts."""
    cut = 16 if rank % 2 == 0 else 8
    return [(16 * rank, 0, 16, cut), (16 * rank, cut, 16, DENSITY[1] - cut)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    assert comm.Get_size() == 4, "run on 4 ranks"
    mine = density_blocks(rank)
    with doreisa.Bridge(comm) as bridge:
        for step in range(a.steps):
            field = density(step)  # a real code computes only its own blocks
            blocks = [field[r : r + n, c : c + m] for r, c, n, m in mine]
            bridge.publish_blocks("density", blocks, step=step, offsets=[(r, c) for r, c, _, _ in mine])
            if rank in (1, 2):
                lo = 16 * (rank - 1)
                bridge.publish("tracer", tracer(step)[lo : lo + 16], step=step)


if __name__ == "__main__":
    main()

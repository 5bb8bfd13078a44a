"""How the ranks' blocks tile an array, and which part of each block the contract selects.

Pure functions, tested without Ray or MPI. Every rank computes the same :class:`Layout` from
the ``(offset, shape)`` of all ranks (one ``allgather``), so no rank needs to ask anyone
which part of its block to copy or where that part goes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from doreisa.contract import ArraySpec
from doreisa.errors import LayoutError

Box = tuple[tuple[int, ...], tuple[int, ...]]  # (offset, shape)
Region = tuple[tuple[int, int, int], ...]  # (start, stop, step) per dim


@dataclass(frozen=True)
class RankPart:
    """What one rank copies of its block.

    Attributes
    ----------
    local : tuple of slice
        The part of the rank's block inside the region (the rank has no ``RankPart`` when it has none).
    index : tuple of int
        Position of that part in the grid of chunks the analytics see.
    shape : tuple of int
        Shape of that part (before preprocessing).
    """

    local: tuple[slice, ...]
    index: tuple[int, ...]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Layout:
    """The grid of chunks of the selected region, and each rank's part of it."""

    chunks: tuple[tuple[int, ...], ...]
    parts: tuple[RankPart | None, ...]  # one per rank

    @property
    def nchunks(self) -> int:
        """Number of chunks the analytics wait for at each step."""
        return sum(part is not None for part in self.parts)


def default_offset(spec: ArraySpec, rank: int, size: int, name: str) -> tuple[int, ...]:
    """Offset of rank ``rank``'s block under the contract's uniform ``block`` (row-major over ranks)."""
    if spec.block is None:
        raise LayoutError(
            f"array {name!r} has no uniform 'block' in the contract, so publish() needs offset=: "
            "the global index of the block's first element"
        )
    grid = tuple(s // b for s, b in zip(spec.shape, spec.block, strict=True))
    if math.prod(grid) != size:
        raise LayoutError(
            f"array {name!r}: block {list(spec.block)} tiles shape {list(spec.shape)} into {math.prod(grid)} blocks "
            f"but there are {size} ranks; pass offset= to publish() or change the contract's block"
        )
    position: list[int] = []
    rest = rank
    for extent in reversed(grid):
        position.append(rest % extent)
        rest //= extent
    return tuple(p * b for p, b in zip(reversed(position), spec.block, strict=True))


def check_block(spec: ArraySpec, name: str, rank: int, offset: tuple[int, ...], shape: tuple[int, ...]) -> None:
    """Check one rank's block against the contract (raises :class:`LayoutError`)."""
    if len(offset) != spec.ndim or len(shape) != spec.ndim:
        raise LayoutError(
            f"rank {rank}: array {name!r} is {spec.ndim}-D in the contract, got a block of shape {shape} "
            f"at offset {offset}"
        )
    if spec.block is not None and shape != spec.block:
        raise LayoutError(f"rank {rank}: array {name!r} block has shape {shape}; the contract says {spec.block}")
    for d, (o, n, size) in enumerate(zip(offset, shape, spec.shape, strict=True)):
        if o < 0 or o + n > size:
            raise LayoutError(
                f"rank {rank}: array {name!r} block {shape} at offset {offset} leaves the array "
                f"{spec.shape} along dim {d}"
            )


def make_layout(spec: ArraySpec, name: str, boxes: list[Box]) -> Layout:
    """Check that ``boxes`` (one per rank) tile the array, and find each rank's part of the region.

    Raises
    ------
    LayoutError
        Naming overlapping ranks, holes, or blocks that do not form a rectilinear grid.
    """
    for rank, (offset, shape) in enumerate(boxes):
        check_block(spec, name, rank, offset, shape)
    covered = sum(math.prod(s) for _, s in boxes)
    holes = LayoutError(
        f"array {name!r}: the ranks' blocks cover {covered} of {math.prod(spec.shape)} elements; "
        "some part of the array has no block (every element must belong to exactly one rank)"
    )
    if covered < math.prod(spec.shape):
        raise holes
    edges = [sorted({o[d] for o, _ in boxes} | {spec.shape[d]}) for d in range(spec.ndim)]
    cells: dict[tuple[int, ...], int] = {}
    for rank, (offset, shape) in enumerate(boxes):
        cell = []
        for d in range(spec.ndim):
            i = edges[d].index(offset[d])
            if edges[d][i + 1] != offset[d] + shape[d]:
                raise LayoutError(
                    f"array {name!r}: rank {rank}'s block {shape} at {offset} crosses another block's edge along "
                    f"dim {d}; the blocks must form a rectilinear grid (same cuts across each dimension)"
                )
            cell.append(i)
        key = tuple(cell)
        if key in cells:
            raise LayoutError(f"array {name!r}: ranks {cells[key]} and {rank} publish the same block at {offset}")
        cells[key] = rank
    if len(cells) != math.prod(len(e) - 1 for e in edges) or any(e[0] != 0 for e in edges):
        raise holes
    return _grid(spec, edges, boxes, cells)


def _grid(spec: ArraySpec, edges: list[list[int]], boxes: list[Box], cells: dict[tuple[int, ...], int]) -> Layout:
    region = spec.region
    # selected count of each grid cell along each dim; empty cells drop out of the chunk grid
    counts = [
        [_count(edges[d][i], edges[d][i + 1], region[d]) for i in range(len(edges[d]) - 1)] for d in range(spec.ndim)
    ]
    kept = [[i for i, c in enumerate(cs) if c] for cs in counts]
    chunks = tuple(tuple(counts[d][i] for i in kept[d]) for d in range(spec.ndim))
    parts: list[RankPart | None] = [None] * len(boxes)
    for cell, rank in cells.items():
        if not all(counts[d][i] for d, i in enumerate(cell)):
            continue
        offset, _ = boxes[rank]
        local = tuple(_local_slice(offset[d], edges[d][i + 1], region[d]) for d, i in enumerate(cell))
        index = tuple(kept[d].index(i) for d, i in enumerate(cell))
        shape = tuple(counts[d][i] for d, i in enumerate(cell))
        parts[rank] = RankPart(local, index, shape)
    return Layout(chunks, tuple(parts))


def _first_selected(lo: int, region: tuple[int, int, int]) -> int:
    start, _, step = region
    return start if lo <= start else start + -(-(lo - start) // step) * step


def _count(lo: int, hi: int, region: tuple[int, int, int]) -> int:
    first = _first_selected(lo, region)
    end = min(hi, region[1])
    return max(0, -(-(end - first) // region[2]))


def _local_slice(lo: int, hi: int, region: tuple[int, int, int]) -> slice:
    first = _first_selected(lo, region)
    return slice(first - lo, min(hi, region[1]) - lo, region[2])


def local_part(offset: tuple[int, ...], shape: tuple[int, ...], region: Region) -> tuple[slice, ...] | None:
    """Slices of a block (at ``offset``, of ``shape``) inside ``region``; ``None`` if it has none."""
    out = []
    for o, n, reg in zip(offset, shape, region, strict=True):
        if _count(o, o + n, reg) == 0:
            return None
        out.append(_local_slice(o, o + n, reg))
    return tuple(out)

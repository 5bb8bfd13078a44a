"""How the ranks' blocks tile an array, and which part of each block the contract selects.

Pure functions, tested without Ray or MPI. Every rank computes the same :class:`Layout` from
the ``(offset, shape)`` of all ranks (one ``allgather``), so no rank needs to ask anyone
which part of its block to copy or where that part goes.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from doreisa.errors import LayoutError

if TYPE_CHECKING:
    from doreisa.contract import ArraySpec
    from doreisa.runtime.plan import ArrayPlan

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


def default_offset(spec: ArrayPlan | ArraySpec, rank: int, size: int, name: str) -> tuple[int, ...]:
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


def check_block(
    spec: ArrayPlan | ArraySpec, name: str, rank: int, offset: tuple[int, ...], shape: tuple[int, ...]
) -> None:
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


def make_layout(spec: ArrayPlan | ArraySpec, name: str, boxes: list[Box]) -> Layout:
    """Check that ``boxes`` (one per rank) tile the array, and find each rank's part of the region.

    Raises
    ------
    LayoutError
        Naming overlapping ranks, holes, or blocks that do not form a rectilinear grid.
    """
    for rank, (offset, shape) in enumerate(boxes):
        check_block(spec, name, rank, offset, shape)
    problems = tiling_problems(spec.shape, boxes)
    if problems:
        raise LayoutError(
            f"array {name!r}: " + "; ".join(problems) + " (every element must belong to exactly one rank)"
        )
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
        cells[tuple(cell)] = rank
    return _grid(spec, edges, boxes, cells)


#: The overlaps and holes an error names at most (a broken decomposition can have thousands).
SHOWN = 3
#: Holes are looked for cell by cell of the grid every block's edges make, up to this many cells.
MAX_CELLS = 1_000_000


def tiling_problems(shape: tuple[int, ...], boxes: list[Box]) -> list[str]:
    """What keeps ``boxes`` (one per rank) from covering ``shape`` exactly once: overlaps (naming
    both ranks), then holes (naming the uncovered region); empty when they tile it."""
    pairs = _overlaps(boxes)
    problems = [_overlap_text(boxes, a, b) for a, b in pairs[:SHOWN]]
    if len(pairs) > SHOWN:
        problems.append(f"{len(pairs) - SHOWN} more pairs of ranks overlap")
    covered, total = sum(math.prod(s) for _, s in boxes), math.prod(shape)
    if pairs or covered < total:
        holes = _holes(shape, boxes)
        if holes is None:
            problems.append(f"the ranks' blocks cover {covered} of {total} elements")
        elif holes:
            more = f" and {len(holes) - SHOWN} more regions" if len(holes) > SHOWN else ""
            where = ", ".join(_region(lo, hi) for lo, hi in holes[:SHOWN])
            problems.append(f"no rank's block covers {where}{more}")
    return problems


def _overlaps(boxes: list[Box]) -> list[tuple[int, int]]:
    """Pairs of ranks whose blocks share elements (a sweep along the first dimension)."""
    order = sorted(range(len(boxes)), key=lambda r: boxes[r][0][0])
    found: list[tuple[int, int]] = []
    open_: list[int] = []
    for r in order:
        start = boxes[r][0][0]
        open_ = [a for a in open_ if boxes[a][0][0] + boxes[a][1][0] > start]
        found += [(min(a, r), max(a, r)) for a in open_ if _intersect(boxes[a], boxes[r])]
        open_.append(r)
    return sorted(found)


def _intersect(a: Box, b: Box) -> bool:
    return all(max(oa, ob) < min(oa + na, ob + nb) for oa, na, ob, nb in zip(a[0], a[1], b[0], b[1], strict=True))


def _overlap_text(boxes: list[Box], a: int, b: int) -> str:
    first, second = _region(*_bounds(boxes[a])), _region(*_bounds(boxes[b]))
    if boxes[a] == boxes[b]:
        return f"ranks {a} and {b} publish the same block {first}"
    if boxes[a][0] == boxes[b][0]:
        return f"ranks {a} and {b} publish blocks at the same offset {boxes[a][0]}: {first} and {second}"
    return f"ranks {a} and {b} publish overlapping blocks {first} and {second}"


def _bounds(box: Box) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return box[0], tuple(o + n for o, n in zip(box[0], box[1], strict=True))


def _region(lo: tuple[int, ...], hi: tuple[int, ...]) -> str:
    return "[" + ", ".join(f"{a}:{b}" for a, b in zip(lo, hi, strict=True)) + "]"


def _holes(shape: tuple[int, ...], boxes: list[Box]) -> list[tuple[tuple[int, ...], tuple[int, ...]]] | None:
    """The cells of the grid made by every block's edges that no block covers (None: too many cells to look)."""
    cuts = [sorted({0, n} | {o[d] for o, _ in boxes} | {o[d] + s[d] for o, s in boxes}) for d, n in enumerate(shape)]
    cuts = [[c for c in cs if 0 <= c <= n] for cs, n in zip(cuts, shape, strict=True)]
    if math.prod(len(c) - 1 for c in cuts) > MAX_CELLS:
        return None
    covered: set[tuple[int, ...]] = set()
    for box in boxes:
        lo, hi = _bounds(box)
        spans = [
            range(bisect.bisect_left(c, a), bisect.bisect_left(c, b)) for c, a, b in zip(cuts, lo, hi, strict=True)
        ]
        covered.update(itertools.product(*spans))
    return [
        (tuple(c[i] for c, i in zip(cuts, cell, strict=True)), tuple(c[i + 1] for c, i in zip(cuts, cell, strict=True)))
        for cell in itertools.product(*(range(len(c) - 1) for c in cuts))
        if cell not in covered
    ]


def _grid(
    spec: ArrayPlan | ArraySpec, edges: list[list[int]], boxes: list[Box], cells: dict[tuple[int, ...], int]
) -> Layout:
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

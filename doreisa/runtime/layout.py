"""How the ranks' blocks tile an array, and which part of each block the contract selects.

Pure functions, tested without Ray or MPI. Every rank computes the same :class:`Layout` from
the ``(offset, shape)`` of every block of every rank (one ``allgather``), so no rank needs to
ask anyone which part of its blocks to copy or where each part goes.

A rank may publish several blocks (tiles, patches), and the blocks need not form a
rectilinear grid. The analytics' grid of chunks is cut wherever any block has an edge: a
rectilinear tiling keeps one chunk per block; a block that another block's edge crosses (a
brick layout, tiles of several sizes) fills several chunks, each copied on its own, so the
array still assembles exactly.
"""

from __future__ import annotations

import bisect
import collections
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
    """What a rank copies of one of its blocks into one chunk of the analytics' grid.

    Attributes
    ----------
    local : tuple of slice
        The part of the block inside the region and the chunk (a block has no ``RankPart`` when the
        region selects nothing of it, and several when other blocks' edges cross it).
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
    """The grid of chunks of the selected region, and the chunks each block fills."""

    chunks: tuple[tuple[int, ...], ...]
    #: one entry per block (in the order of the boxes given): its parts, one per chunk it fills;
    #: empty when the region selects nothing of it
    parts: tuple[tuple[RankPart, ...], ...]

    @property
    def nchunks(self) -> int:
        """Number of chunks the analytics wait for at each step."""
        return sum(len(parts) for parts in self.parts)


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


def make_layout(spec: ArrayPlan | ArraySpec, name: str, boxes: list[Box], owners: list[int] | None = None) -> Layout:
    """Check that ``boxes`` tile the array, and find the chunks of the region each one fills.

    ``owners``: the rank that publishes each box (default: box ``i`` is rank ``i``'s only block).

    Raises
    ------
    LayoutError
        Naming the ranks (and which of their blocks) whose blocks are out of the array, overlap,
        or leave holes.
    """
    owners = list(range(len(boxes))) if owners is None else owners
    for owner, (offset, shape) in zip(owners, boxes, strict=True):
        check_block(spec, name, owner, offset, shape)
    problems = tiling_problems(spec.shape, boxes, owners)
    if problems:
        raise LayoutError(
            f"array {name!r}: " + "; ".join(problems) + " (every element must belong to exactly one rank)"
        )
    return _grid(spec, _cuts(spec.shape, boxes), boxes)


def _labels(owners: list[int]) -> list[str | None]:
    """How errors name each block when its rank publishes several: ``rank 3's block 1`` (None: just the rank)."""
    count = collections.Counter(owners)
    seen: dict[int, int] = {}
    labels: list[str | None] = []
    for owner in owners:
        k = seen[owner] = seen.get(owner, -1) + 1
        labels.append(None if count[owner] == 1 else f"rank {owner}'s block {k}")
    return labels


#: The overlaps and holes an error names at most (a broken decomposition can have thousands).
SHOWN = 3
#: Holes are looked for cell by cell of the grid every block's edges make, up to this many cells.
MAX_CELLS = 1_000_000


def tiling_problems(shape: tuple[int, ...], boxes: list[Box], owners: list[int] | None = None) -> list[str]:
    """What keeps ``boxes`` from covering ``shape`` exactly once: overlaps (naming both blocks by the rank
    that publishes each, its ``owners``, default box ``i`` is rank ``i``'s), then holes (naming the uncovered
    region); empty when they tile it."""
    owners = list(range(len(boxes))) if owners is None else owners
    labels = _labels(owners)
    pairs = _overlaps(boxes)
    problems = [_overlap_text(boxes, owners, labels, a, b) for a, b in pairs[:SHOWN]]
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


def _overlap_text(boxes: list[Box], owners: list[int], labels: list[str | None], a: int, b: int) -> str:
    first, second = _region(*_bounds(boxes[a])), _region(*_bounds(boxes[b]))
    if labels[a] is None and labels[b] is None:  # ranks of one block each
        who = f"ranks {owners[a]} and {owners[b]}"
    else:
        who = f"{labels[a] or f'rank {owners[a]}'} and {labels[b] or f'rank {owners[b]}'}"
    if boxes[a] == boxes[b]:
        return f"{who} publish the same block {first}"
    if boxes[a][0] == boxes[b][0]:
        return f"{who} publish blocks at the same offset {boxes[a][0]}: {first} and {second}"
    return f"{who} publish overlapping blocks {first} and {second}"


def _bounds(box: Box) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return box[0], tuple(o + n for o, n in zip(box[0], box[1], strict=True))


def _region(lo: tuple[int, ...], hi: tuple[int, ...]) -> str:
    return "[" + ", ".join(f"{a}:{b}" for a, b in zip(lo, hi, strict=True)) + "]"


def _cuts(shape: tuple[int, ...], boxes: list[Box]) -> list[list[int]]:
    """Along each dimension, every block's edges (and the array's): the grid every block is made of."""
    cuts = [sorted({0, n} | {o[d] for o, _ in boxes} | {o[d] + s[d] for o, s in boxes}) for d, n in enumerate(shape)]
    return [[c for c in cs if 0 <= c <= n] for cs, n in zip(cuts, shape, strict=True)]


def _cells(cuts: list[list[int]], box: Box) -> list[range]:
    """The cells of the grid ``cuts`` that ``box`` covers, as a range of cell numbers per dimension."""
    lo, hi = _bounds(box)
    return [range(bisect.bisect_left(c, a), bisect.bisect_left(c, b)) for c, a, b in zip(cuts, lo, hi, strict=True)]


def _holes(shape: tuple[int, ...], boxes: list[Box]) -> list[tuple[tuple[int, ...], tuple[int, ...]]] | None:
    """The cells of the grid made by every block's edges that no block covers (None: too many cells to look)."""
    cuts = _cuts(shape, boxes)
    if math.prod(len(c) - 1 for c in cuts) > MAX_CELLS:
        return None
    covered: set[tuple[int, ...]] = set()
    for box in boxes:
        covered.update(itertools.product(*_cells(cuts, box)))
    return [
        (tuple(c[i] for c, i in zip(cuts, cell, strict=True)), tuple(c[i + 1] for c, i in zip(cuts, cell, strict=True)))
        for cell in itertools.product(*(range(len(c) - 1) for c in cuts))
        if cell not in covered
    ]


def _grid(spec: ArrayPlan | ArraySpec, cuts: list[list[int]], boxes: list[Box]) -> Layout:
    """The chunks of the region in the grid ``cuts``, and each box's parts of them (boxes that tile the array)."""
    region = spec.region
    # selected count of each grid cell along each dim; empty cells drop out of the chunk grid
    counts = [
        [_count(cuts[d][i], cuts[d][i + 1], region[d]) for i in range(len(cuts[d]) - 1)] for d in range(spec.ndim)
    ]
    kept = [{i: k for k, i in enumerate(i for i, c in enumerate(cs) if c)} for cs in counts]
    chunks = tuple(tuple(counts[d][i] for i in kept[d]) for d in range(spec.ndim))
    parts: list[tuple[RankPart, ...]] = []
    for box in boxes:
        offset, mine = box[0], []
        for cell in itertools.product(*_cells(cuts, box)):
            if not all(counts[d][i] for d, i in enumerate(cell)):
                continue
            local = tuple(
                _local_slice(cuts[d][i], cuts[d][i + 1], region[d], base=offset[d]) for d, i in enumerate(cell)
            )
            index = tuple(kept[d][i] for d, i in enumerate(cell))
            mine.append(RankPart(local, index, tuple(counts[d][i] for d, i in enumerate(cell))))
        parts.append(tuple(mine))
    return Layout(chunks, tuple(parts))


def _first_selected(lo: int, region: tuple[int, int, int]) -> int:
    start, _, step = region
    return start if lo <= start else start + -(-(lo - start) // step) * step


def _count(lo: int, hi: int, region: tuple[int, int, int]) -> int:
    first = _first_selected(lo, region)
    end = min(hi, region[1])
    return max(0, -(-(end - first) // region[2]))


def _local_slice(lo: int, hi: int, region: tuple[int, int, int], base: int | None = None) -> slice:
    """The selected indices of ``[lo, hi)``, counted from ``base`` (the block's first index; default ``lo``)."""
    first = _first_selected(lo, region)
    base = lo if base is None else base
    return slice(first - base, min(hi, region[1]) - base, region[2])


def local_part(offset: tuple[int, ...], shape: tuple[int, ...], region: Region) -> tuple[slice, ...] | None:
    """Slices of a block (at ``offset``, of ``shape``) inside ``region``; ``None`` if it has none."""
    out = []
    for o, n, reg in zip(offset, shape, region, strict=True):
        if _count(o, o + n, reg) == 0:
            return None
        out.append(_local_slice(o, o + n, reg))
    return tuple(out)

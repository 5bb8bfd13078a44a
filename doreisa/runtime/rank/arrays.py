"""One array of the contract (from the rank's compiled plan) as a rank publishes it: what never changes,
what is fixed at the first publish, and what changes at every step.

* :class:`RankArray`: the contract's array and the operator this rank applies (immutable);
* :class:`Tiling`: this rank's blocks, and for each chunk of the analytics' grid they fill a
  :class:`BlockCopy` (what is copied, and where it lands), agreed by every rank at the first
  publish (immutable; :func:`agree_on_layout`);
* :class:`ArrayRun`: the cadence, the last step, and the fast path's next wanted step (mutable).

The checks of a published block live here too: they raise before anything is copied.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from doreisa.errors import BlockMismatchError, LayoutError
from doreisa.plugins import Preprocessor, make_preprocessor
from doreisa.runtime.cadence import ArrayCadence
from doreisa.runtime.layout import (
    Box,
    Layout,
    RankPart,
    check_block,
    default_offset,
    make_layout,
    tiling_problems,
)
from doreisa.runtime.plan import ArrayPlan, RankPlan
from doreisa.runtime.rank.comm import Communicator
from doreisa.runtime.rank.device import DeviceBlock

if TYPE_CHECKING:
    from doreisa.runtime.rank.transport import Staging


@dataclass(frozen=True)
class RankArray:
    """An array of the contract, as this rank applies it."""

    name: str
    ring_id: int  # its number among the contract's arrays: how the node actor tells its rings apart
    spec: ArrayPlan
    dtype: np.dtype[Any]
    operator: Preprocessor | None
    narrays: int = 1  # arrays in the contract: a ring per copied chunk is numbered ring_id + narrays * k

    @classmethod
    def all_of(cls, plan: RankPlan) -> list[RankArray]:
        """Every array of ``plan``, its operator built (``ContractError`` if this rank cannot build it)."""
        out = []
        for i, (name, spec) in enumerate(plan.arrays.items()):
            pre = spec.preprocess
            op = None if pre is None else make_preprocessor(pre.function, pre.params)
            out.append(cls(name, i, spec, np.dtype(spec.dtype), op, len(plan.arrays)))
        return out

    @property
    def operator_name(self) -> str:
        return "" if self.spec.preprocess is None else self.spec.preprocess.function


#: Ring numbers travel as 16-bit integers (``wire.free_record``).
MAX_RINGS = 1 << 16


@dataclass(frozen=True)
class BlockCopy:
    """One chunk of the analytics' grid that this rank fills from one of its blocks: fixed at the first publish.

    ``shape``, ``dtype``, ``index`` and ``chunks`` are those of the copied chunk and the analytics'
    grid, after the operator (which may add dimensions). Each is copied into its own ring, ``ring``.
    """

    box: Box  # the block it is copied from
    tile: int  # which of the rank's blocks that is (0 when it publishes one)
    ring: int
    layout: Layout
    part: RankPart
    whole: bool  # the whole block is copied: no view of a part to make
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    index: tuple[int, ...]
    chunks: tuple[tuple[int, ...], ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the copied block (a ring slot holds one)."""
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @classmethod
    def plan(cls, array: RankArray, box: Box, tile: int, part: RankPart, layout: Layout, ring: int) -> BlockCopy:
        """What is copied of block ``box`` (the rank's ``tile``-th) into the chunk ``part`` of ``layout``."""
        op = array.operator
        chunks = layout.chunks if op is None else op.chunks_of(layout.chunks)
        shape, dtype = part.shape, array.dtype
        if op is not None:
            shape, dtype = op.shape_of(shape), op.dtype_of(dtype)
        index = part.index + (0,) * (len(shape) - len(part.index))  # an operator may add dimensions
        return cls(box, tile, ring, layout, part, part.shape == box[1], shape, dtype, index, chunks)

    @property
    def nblocks(self) -> int:
        """Blocks of a complete step."""
        return self.layout.nchunks


@dataclass(frozen=True)
class Tiling:
    """This rank's blocks of an array and the chunks it copies of them: agreed at the first publish."""

    boxes: tuple[Box, ...]  # its blocks, in the order publish gives them
    pieces: tuple[BlockCopy, ...]  # empty when the region selects nothing of them
    layout: Layout

    @classmethod
    def plan(cls, array: RankArray, boxes: tuple[Box, ...], layout: Layout, first: int) -> Tiling:
        """This rank's part of ``layout``, whose blocks from ``first`` on are its ``boxes``."""
        pieces = [
            (tile, part) for tile in range(len(boxes)) for part in layout.parts[first + tile]
        ]  # the rank's chunks, one ring each
        if array.ring_id + array.narrays * len(pieces) >= MAX_RINGS:
            raise LayoutError(
                f"array {array.name!r}: this rank's blocks fill {len(pieces)} chunks of the analytics' grid, "
                f"more than the {MAX_RINGS // array.narrays} a rank may copy per array; publish fewer, larger blocks"
            )
        copies = tuple(
            BlockCopy.plan(array, boxes[tile], tile, part, layout, array.ring_id + array.narrays * k)
            for k, (tile, part) in enumerate(pieces)
        )
        return cls(boxes, copies, layout)


class ArrayRun:
    """What changes while a rank publishes an array: its cadence, last step, and what the fast path knows."""

    __slots__ = (
        "array",
        "comm",
        "last_step",
        "last_wanted",
        "schedule",
        "skip_below",
        "stagings",
        "stride",
        "tiling",
        "views",
    )

    def __init__(self, array: RankArray, schedule: ArrayCadence, comm: Communicator | None) -> None:
        self.array = array
        self.schedule = schedule
        #: the ranks that publish it (the contract's ``ranks``): its collectives run among them alone; None:
        #: this rank is not one of them
        self.comm = comm
        self.tiling: Tiling | None = None  # set at the first publish
        self.stagings: tuple[Staging, ...] = ()  # one per piece of the tiling, opened at the first copy
        self.last_step = -1
        #: a step-count cadence that nothing can change: its period and last wanted step (0: none such)
        self.stride = 0
        self.last_wanted: float = float("inf")
        #: steps below this are known unwanted, and this one wanted (when ``stride``)
        self.skip_below = -1
        #: the arrays that view this one (``of:``): published with it
        self.views: tuple[ArrayRun, ...] = ()

    @classmethod
    def all_of(cls, plan: RankPlan, comm_of: Callable[[str], Communicator | None]) -> dict[str, ArrayRun]:
        """A run of every array of ``plan`` (``comm_of``: the ranks that publish it), its views attached to it."""
        runs = {
            a.name: ArrayRun(a, ArrayCadence(plan.cadence_of(a.name)), comm_of(a.name)) for a in RankArray.all_of(plan)
        }
        for base, views in plan.views.items():
            runs[base].views = tuple(runs[v] for v in views)
        return runs

    def views_skip(self, step: int) -> bool:
        """True if every view of this array would take the fast path at ``step`` too (their last step moves)."""
        if all(v.last_step < step < v.skip_below for v in self.views):
            for view in self.views:
                view.last_step = step
            return True
        return False


class InFlight:
    """The steps handed over and not yet analysed, with the arrays still due (what backpressure counts)."""

    def __init__(self) -> None:
        self.steps: dict[int, set[str]] = {}

    def add(self, step: int, name: str) -> None:
        self.steps.setdefault(step, set()).add(name)

    def done(self, items: tuple[tuple[str, int], ...]) -> None:
        for name, step in items:
            pending = self.steps.get(step)
            if pending is not None:
                pending.discard(name)
                if not pending:
                    del self.steps[step]

    def __len__(self) -> int:
        return len(self.steps)

    def __contains__(self, step: object) -> bool:
        return step in self.steps


#: Steps are stored as signed 64-bit integers (in the ring's header, in Ray's records).
MAX_STEP = 2**63 - 1
#: ``ArrayRun.skip_below`` when no step will be wanted again: above every valid step.
NEVER = MAX_STEP + 1


def checked_step(rank: int, run: ArrayRun, step: Any) -> int:
    """``step`` as an int in ``[0, MAX_STEP]``, after the last one (``BlockMismatchError`` naming the rank and
    array otherwise). Checked before anything is written: a refused step changes nothing."""
    if isinstance(step, bool):  # an int to Python, but never a step
        raise BlockMismatchError(f"rank {rank}: step must be an integer, got {step!r}")
    try:
        value = operator.index(step)
    except TypeError:
        raise BlockMismatchError(f"rank {rank}: step must be an integer, got {step!r}") from None
    if not 0 <= value <= MAX_STEP:
        raise BlockMismatchError(f"rank {rank}: step must be in [0, 2**63 - 1], got {value}")
    if value <= run.last_step:
        raise BlockMismatchError(
            f"rank {rank}: array {run.array.name!r} step {value} after step {run.last_step}; steps must increase"
        )
    return value


def block_problem(array: RankArray, block: Any) -> str | None:
    """What makes ``block`` unfit for ``array`` whatever its offset, if anything."""
    if not isinstance(block, np.ndarray | DeviceBlock):
        kind = type(block).__name__
        return f"block must be a numpy array, got {kind} (or a device array: __cuda_array_interface__ or DLPack)"
    if block.dtype != array.dtype:
        return f"block dtype is {block.dtype}; the contract says {array.spec.dtype}"
    if block.ndim != array.spec.ndim:
        return f"block is {block.ndim}-D; the contract's array is {array.spec.ndim}-D"
    return None


def check_same_blocks(
    rank: int, run: ArrayRun, blocks: tuple[Any, ...], offsets: tuple[Any, ...] | None, step: int
) -> None:
    """Raise ``BlockMismatchError`` if ``blocks`` are not the blocks this rank published first."""
    assert run.tiling is not None, "the layout is agreed at the first publish"
    boxes = run.tiling.boxes
    problem = None
    if len(blocks) != len(boxes):
        problem = f"{len(blocks)} blocks; the first publish gave {len(boxes)}, and their number must stay fixed"
    for k, (block, box) in enumerate(zip(blocks, boxes, strict=False)):
        which = f"block {k}: " if len(boxes) > 1 else ""
        problem = problem or _prefixed(which, block_problem(run.array, block))
        if problem is None and block.shape != box[1]:
            problem = f"{which}block shape {block.shape} differs from its shape at the first publish, {box[1]}"
        offset = None if offsets is None else tuple(offsets[k])
        if problem is None and offset is not None and offset != box[0]:
            problem = f"{which}offset {offset} differs from the first publish, {box[0]}; it must stay fixed"
    if problem:
        raise BlockMismatchError(f"rank {rank}: array {run.array.name!r} step {step}: {problem}")


def _prefixed(prefix: str, problem: str | None) -> str | None:
    return None if problem is None else prefix + problem


def agree_on_layout(
    comm: Communicator, array: RankArray, blocks: tuple[Any, ...], offsets: tuple[Any, ...] | None
) -> Tiling:
    """Collective: every rank's blocks, the tiling checked, and what this rank copies.

    ``offsets``: one per block; None: one block, at the offset the contract's uniform ``block`` gives.

    Raises
    ------
    BlockMismatchError
        If this rank's blocks are unfit (every rank raises: the others a ``LayoutError``).
    LayoutError
        Naming every rank whose block is out of place, overlaps or leaves holes.
    """
    rank, name = comm.Get_rank(), array.name
    world = array.spec.ranks or range(comm.Get_size())  # errors name ranks of the simulation's communicator
    own_problem = problem = next(filter(None, (block_problem(array, b) for b in blocks)), None)
    boxes = None
    if problem is None:
        try:
            boxes = _boxes(comm, array, blocks, offsets)
            for box in boxes:  # a misplaced block is still named with the others' overlaps and holes
                check_block(array.spec, name, world[rank], *box)
        except LayoutError as exc:
            problem = str(exc).removeprefix(f"rank {world[rank]}: ")
    gathered = comm.allgather((boxes, problem))
    problems = [f"rank {world[r]}: {p}" for r, (_, p) in enumerate(gathered) if p]
    if own_problem is not None:
        raise BlockMismatchError(f"rank {world[rank]}: array {name!r}: {own_problem}")
    owners = [r for r, (bs, _) in enumerate(gathered) for _ in bs or ()]
    every = [b for bs, _ in gathered for b in bs or ()]
    if problems:
        if all(bs is not None for bs, _ in gathered):  # only misplaced blocks: say too what the others leave
            empty = ((0,) * array.spec.ndim, (0,) * array.spec.ndim)
            fair = [empty if gathered[r][1] else b for r, b in zip(owners, every, strict=True)]
            problems += tiling_problems(array.spec.shape, fair, [world[r] for r in owners])
        raise LayoutError(f"array {name!r}: " + "; ".join(problems))
    assert boxes is not None, "no problem: the boxes are known"
    layout = make_layout(array.spec, name, every, [world[r] for r in owners])
    return Tiling.plan(array, boxes, layout, owners.index(rank) if boxes else 0)


def _boxes(
    comm: Communicator, array: RankArray, blocks: tuple[Any, ...], offsets: tuple[Any, ...] | None
) -> tuple[Box, ...]:
    """This rank's blocks as ``(offset, shape)`` (``LayoutError`` if the contract's ``block`` gives no offset)."""
    if offsets is None:
        offsets = (default_offset(array.spec, comm.Get_rank(), comm.Get_size(), array.name),)
    return tuple((tuple(int(o) for o in offset), tuple(b.shape)) for b, offset in zip(blocks, offsets, strict=True))

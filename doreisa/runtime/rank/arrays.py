"""One array of the contract (from the rank's compiled plan) as a rank publishes it: what never changes,
what is fixed at the first publish, and what changes at every step.

* :class:`RankArray`: the contract's array and the operator this rank applies (immutable);
* :class:`BlockCopy`: what this rank copies of its block and where it lands in the analytics'
  chunk grid, agreed by every rank at the first publish (immutable; :func:`agree_on_layout`);
* :class:`ArrayRun`: the cadence, the last step, and the fast path's next wanted step (mutable).

The checks of a published block live here too: they raise before anything is copied.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from doreisa.errors import BlockMismatchError, LayoutError
from doreisa.plugins import Preprocessor, make_preprocessor
from doreisa.runtime.cadence import ArrayCadence
from doreisa.runtime.layout import Box, Layout, RankPart, check_block, default_offset, make_layout, tiling_problems
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

    @classmethod
    def all_of(cls, plan: RankPlan) -> list[RankArray]:
        """Every array of ``plan``, its operator built (``ContractError`` if this rank cannot build it)."""
        out = []
        for i, (name, spec) in enumerate(plan.arrays.items()):
            pre = spec.preprocess
            op = None if pre is None else make_preprocessor(pre.function, pre.params)
            out.append(cls(name, i, spec, np.dtype(spec.dtype), op))
        return out

    @property
    def operator_name(self) -> str:
        return "" if self.spec.preprocess is None else self.spec.preprocess.function


@dataclass(frozen=True)
class BlockCopy:
    """This rank's block of an array, and what it copies of it: fixed at the first publish.

    ``part`` is None when the contract's region leaves this rank nothing to copy. ``shape``,
    ``dtype``, ``index`` and ``chunks`` are those of the copied block and the analytics' grid,
    after the operator (which may add dimensions).
    """

    box: Box
    layout: Layout
    part: RankPart | None
    whole: bool  # the rank copies its whole block: no view of a part to make
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    index: tuple[int, ...]
    chunks: tuple[tuple[int, ...], ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the copied block (a ring slot holds one)."""
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @classmethod
    def plan(cls, array: RankArray, box: Box, layout: Layout, rank: int) -> BlockCopy:
        """What ``rank`` copies of its block ``box`` in ``layout``."""
        part = layout.parts[rank]
        op = array.operator
        chunks = layout.chunks if op is None else op.chunks_of(layout.chunks)
        if part is None:
            return cls(box, layout, None, False, (), array.dtype, (), chunks)
        shape, dtype = part.shape, array.dtype
        if op is not None:
            shape, dtype = op.shape_of(shape), op.dtype_of(dtype)
        index = part.index + (0,) * (len(shape) - len(part.index))  # an operator may add dimensions
        return cls(box, layout, part, part.shape == box[1], shape, dtype, index, chunks)

    @property
    def nblocks(self) -> int:
        """Blocks of a complete step."""
        return self.layout.nchunks


class ArrayRun:
    """What changes while a rank publishes an array: its cadence, last step, and what the fast path knows."""

    __slots__ = ("array", "copy", "last_step", "last_wanted", "schedule", "skip_below", "staging", "stride", "views")

    def __init__(self, array: RankArray, schedule: ArrayCadence) -> None:
        self.array = array
        self.schedule = schedule
        self.copy: BlockCopy | None = None  # set at the first publish
        self.staging: Staging | None = None  # opened at the first copy
        self.last_step = -1
        #: a step-count cadence that nothing can change: its period and last wanted step (0: none such)
        self.stride = 0
        self.last_wanted: float = float("inf")
        #: steps below this are known unwanted, and this one wanted (when ``stride``)
        self.skip_below = -1
        #: the arrays that view this one (``of:``): published with it
        self.views: tuple[ArrayRun, ...] = ()

    @classmethod
    def all_of(cls, plan: RankPlan) -> dict[str, ArrayRun]:
        """A run of every array of ``plan``, each array's views attached to it."""
        runs = {a.name: ArrayRun(a, ArrayCadence(plan.cadence_of(a.name))) for a in RankArray.all_of(plan)}
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


def check_same_block(rank: int, run: ArrayRun, block: Any, offset: tuple[int, ...] | None, step: int) -> None:
    """Raise ``BlockMismatchError`` if ``block`` is not the block this rank published first."""
    assert run.copy is not None, "the layout is agreed at the first publish"
    problem = block_problem(run.array, block)
    box = run.copy.box
    if problem is None and block.shape != box[1]:
        problem = f"block shape {block.shape} differs from its shape at the first publish, {box[1]}"
    if problem is None and offset is not None and tuple(offset) != box[0]:
        problem = f"offset {tuple(offset)} differs from the first publish, {box[0]}; it must stay fixed"
    if problem:
        raise BlockMismatchError(f"rank {rank}: array {run.array.name!r} step {step}: {problem}")


def agree_on_layout(comm: Communicator, array: RankArray, block: Any, offset: tuple[int, ...] | None) -> BlockCopy:
    """Collective: every rank's block, the tiling checked, and what this rank copies.

    Raises
    ------
    BlockMismatchError
        If this rank's block is unfit (every rank raises: the others a ``LayoutError``).
    LayoutError
        Naming every rank whose block is out of place, overlaps or leaves holes.
    """
    rank, size, name = comm.Get_rank(), comm.Get_size(), array.name
    own_problem = problem = block_problem(array, block)
    box = None
    if problem is None:
        try:
            if offset is None:
                offset = default_offset(array.spec, rank, size, name)
            box = (tuple(int(o) for o in offset), tuple(block.shape))
            check_block(array.spec, name, rank, *box)
        except LayoutError as exc:
            problem = str(exc).removeprefix(f"rank {rank}: ")
    gathered = comm.allgather((box, problem))
    problems = [f"rank {r}: {p}" for r, (_, p) in enumerate(gathered) if p]
    if own_problem is not None:
        raise BlockMismatchError(f"rank {rank}: array {name!r}: {own_problem}")
    if problems:
        if all(b is not None for b, _ in gathered):  # only misplaced blocks: say too what the others leave
            empty = ((0,) * array.spec.ndim, (0,) * array.spec.ndim)
            problems += tiling_problems(array.spec.shape, [empty if p else b for b, p in gathered])
        raise LayoutError(f"array {name!r}: " + "; ".join(problems))
    assert box is not None, "no problem: the box is known"
    return BlockCopy.plan(array, box, make_layout(array.spec, name, [b for b, _ in gathered]), rank)

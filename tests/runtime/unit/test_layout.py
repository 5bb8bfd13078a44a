"""How the ranks' blocks tile an array, and which part of each block the contract selects."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from doreisa.contract import ArraySpec
from doreisa.errors import LayoutError
from doreisa.runtime.layout import Box, Layout, RankPart, check_block, default_offset, make_layout


def _spec(shape: tuple[int, ...], block: tuple[int, ...] | None = None, select: Any = None) -> ArraySpec:
    data: dict[str, Any] = {"dtype": "float64", "shape": list(shape)}
    if block is not None:
        data["block"] = list(block)
    if select is not None:
        data["select"] = select
    return ArraySpec.model_validate(data)


def _boxes_from_cuts(cuts: list[list[int]], order: list[int] | None = None) -> list[Box]:
    """Blocks of the rectilinear grid cut at ``cuts`` (each list starts at 0 and ends at the size)."""
    cells = list(np.ndindex(*(len(c) - 1 for c in cuts)))
    boxes = [
        (
            tuple(c[i] for c, i in zip(cuts, cell, strict=True)),
            tuple(c[i + 1] - c[i] for c, i in zip(cuts, cell, strict=True)),
        )
        for cell in cells
    ]
    return boxes if order is None else [boxes[k] for k in order]


def _region_slices(spec: ArraySpec) -> tuple[slice, ...]:
    return tuple(slice(start, stop, step) for start, stop, step in spec.region)


def _box_slices(box: Box) -> tuple[slice, ...]:
    return tuple(slice(o, o + n) for o, n in zip(*box, strict=True))


def _nest(parts: dict[tuple[int, ...], np.ndarray], grid: tuple[int, ...], prefix: tuple[int, ...] = ()) -> Any:
    if len(prefix) == len(grid):
        return parts[prefix]
    return [_nest(parts, grid, (*prefix, i)) for i in range(grid[len(prefix)])]


def _single(layout: Layout) -> list[RankPart | None]:
    """The one part of each block (None: none), for tilings where no block fills several chunks."""
    assert all(len(parts) <= 1 for parts in layout.parts)
    return [parts[0] if parts else None for parts in layout.parts]


def _assemble(layout: Layout, boxes: list[Box], data: np.ndarray) -> np.ndarray:
    """Each block's ``local`` parts, placed at their ``index``, joined with ``np.block``."""
    parts: dict[tuple[int, ...], np.ndarray] = {}
    for plans, box in zip(layout.parts, boxes, strict=True):
        for plan in plans:
            part = data[_box_slices(box)][plan.local]
            assert part.shape == plan.shape
            assert plan.index not in parts
            parts[plan.index] = part
    grid = tuple(len(c) for c in layout.chunks)
    assert len(parts) == math.prod(grid) == layout.nchunks
    return np.block(_nest(parts, grid))


# -- uniform grids --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "block", "offsets"),
    [
        ((8,), (8,), [(0,)]),
        ((8,), (4,), [(0,), (4,)]),
        ((8,), (2,), [(0,), (2,), (4,), (6,)]),
        ((4, 6), (2, 3), [(0, 0), (0, 3), (2, 0), (2, 3)]),
        ((6, 6), (3, 2), [(0, 0), (0, 2), (0, 4), (3, 0), (3, 2), (3, 4)]),
        ((4, 2, 6), (2, 2, 2), [(0, 0, 0), (0, 0, 2), (0, 0, 4), (2, 0, 0), (2, 0, 2), (2, 0, 4)]),
        ((2, 4, 4), (2, 2, 2), [(0, 0, 0), (0, 0, 2), (0, 2, 0), (0, 2, 2)]),
    ],
)
def test_default_offset_is_row_major(shape, block, offsets) -> None:
    spec = _spec(shape, block)
    got = [default_offset(spec, rank, len(offsets), "t") for rank in range(len(offsets))]
    assert got == offsets


@pytest.mark.parametrize(
    ("shape", "block", "chunks"),
    [
        ((8,), (8,), ((8,),)),
        ((8,), (4,), ((4, 4),)),
        ((8,), (2,), ((2, 2, 2, 2),)),
        ((6, 6), (3, 2), ((3, 3), (2, 2, 2))),
        ((4, 2, 6), (2, 2, 2), ((2, 2), (2,), (2, 2, 2))),
    ],
)
def test_uniform_grid_layout_copies_whole_blocks(shape, block, chunks) -> None:
    spec = _spec(shape, block)
    size = math.prod(s // b for s, b in zip(shape, block, strict=True))
    boxes = [(default_offset(spec, r, size, "t"), block) for r in range(size)]
    layout = make_layout(spec, "t", boxes)
    assert layout.chunks == chunks
    assert layout.nchunks == size
    for rank, plan in enumerate(_single(layout)):
        assert plan is not None
        assert plan.shape == block
        assert plan.local == tuple(slice(0, b, 1) for b in block)
        assert plan.index == tuple(o // b for o, b in zip(boxes[rank][0], block, strict=True))
    data = np.arange(math.prod(shape), dtype=float).reshape(shape)
    np.testing.assert_array_equal(_assemble(layout, boxes, data), data)


def test_uneven_decomposition_by_offsets() -> None:
    spec = _spec((10,))
    boxes: list[Box] = [((0,), (4,)), ((4,), (3,)), ((7,), (3,))]
    layout = make_layout(spec, "t", boxes)
    assert layout.chunks == ((4, 3, 3),)
    assert [p.index for p in _single(layout) if p is not None] == [(0,), (1,), (2,)]
    data = np.arange(10.0)
    np.testing.assert_array_equal(_assemble(layout, boxes, data), data)


def test_ranks_in_any_order_get_grid_positions() -> None:
    spec = _spec((5, 7))
    boxes = _boxes_from_cuts([[0, 2, 5], [0, 3, 7]], order=[3, 0, 2, 1])
    layout = make_layout(spec, "t", boxes)
    assert layout.chunks == ((2, 3), (3, 4))
    assert [p.index for p in _single(layout) if p is not None] == [(1, 1), (0, 0), (1, 0), (0, 1)]


# -- region selection -----------------------------------------------------------------------


def test_region_across_uneven_blocks() -> None:
    # shape 10 split 4+3+3; indices 1, 4, 7 selected: one per block
    spec = _spec((10,), select=[{"start": 1, "stop": 10, "step": 3}])
    boxes: list[Box] = [((0,), (4,)), ((4,), (3,)), ((7,), (3,))]
    layout = make_layout(spec, "t", boxes)
    assert layout.chunks == ((1, 1, 1),)
    assert [p.local for p in _single(layout) if p is not None] == [
        (slice(1, 4, 3),),
        (slice(0, 3, 3),),
        (slice(0, 3, 3),),
    ]
    np.testing.assert_array_equal(_assemble(layout, boxes, np.arange(10.0)), [1.0, 4.0, 7.0])


def test_blocks_outside_region_get_no_part() -> None:
    spec = _spec((8, 8), block=(4, 4), select=[{"start": 1, "stop": 3}, {}])
    boxes = [(default_offset(spec, r, 4, "t"), (4, 4)) for r in range(4)]
    layout = make_layout(spec, "t", boxes)
    assert _single(layout)[2] is None
    assert _single(layout)[3] is None
    assert layout.nchunks == 2
    assert layout.chunks == ((2,), (4, 4))
    data = np.arange(64.0).reshape(8, 8)
    np.testing.assert_array_equal(_assemble(layout, boxes, data), data[1:3, :])


def test_step_skipping_a_whole_block_drops_it_from_the_grid() -> None:
    # blocks [0,2) [2,4) [4,6); step 4 from 0 selects 0 and 4: the middle block has nothing
    spec = _spec((6,), select=[{"step": 4}])
    boxes: list[Box] = [((0,), (2,)), ((2,), (2,)), ((4,), (2,))]
    layout = make_layout(spec, "t", boxes)
    assert _single(layout)[1] is None
    assert layout.chunks == ((1, 1),)
    assert [p.index for p in _single(layout) if p is not None] == [(0,), (1,)]
    np.testing.assert_array_equal(_assemble(layout, boxes, np.arange(6.0)), [0.0, 4.0])


def _random_case(rng: np.random.Generator) -> tuple[ArraySpec, list[Box]]:
    ndim = int(rng.integers(1, 4))
    shape = tuple(int(n) for n in rng.integers(1, 13, size=ndim))
    cuts = []
    for n in shape:
        inner = rng.choice(np.arange(1, n), size=int(rng.integers(0, n)), replace=False) if n > 1 else []
        cuts.append([0, *sorted(int(c) for c in inner), n])
    select = []
    for n in shape:
        start = int(rng.integers(0, n))
        stop = int(rng.integers(start + 1, n + 1))
        select.append({"start": start, "stop": stop, "step": int(rng.integers(1, 5))})
    boxes = _boxes_from_cuts(cuts)
    order = [int(k) for k in rng.permutation(len(boxes))]
    return _spec(shape, select=select), [boxes[k] for k in order]


def test_random_regions_reassemble_to_the_selected_region() -> None:
    rng = np.random.default_rng(20260101)
    for case in range(200):
        spec, boxes = _random_case(rng)
        layout = make_layout(spec, "t", boxes)
        data = rng.random(spec.shape)
        expected = data[_region_slices(spec)]
        assert tuple(sum(c) for c in layout.chunks) == spec.selected_shape == expected.shape, case
        np.testing.assert_array_equal(_assemble(layout, boxes, data), expected, err_msg=f"case {case}")
        selected = np.zeros(spec.shape, dtype=bool)
        selected[_region_slices(spec)] = True
        for plans, box in zip(layout.parts, boxes, strict=True):
            inside = int(selected[_box_slices(box)].sum())
            assert inside == sum(math.prod(plan.shape) for plan in plans), case
            for plan in plans:
                assert all(
                    layout.chunks[d][i] == n for d, (i, n) in enumerate(zip(plan.index, plan.shape, strict=True))
                )


# -- errors -----------------------------------------------------------------------------------


def test_same_block_twice_names_both_ranks() -> None:
    spec = _spec((8,))
    boxes: list[Box] = [((0,), (4,)), ((4,), (4,)), ((4,), (4,))]
    with pytest.raises(LayoutError, match=r"array 't': ranks 1 and 2 publish the same block \[4:8\] \(every element"):
        make_layout(spec, "t", boxes)


def test_two_ranks_at_one_offset_are_named_with_the_hole_they_leave() -> None:
    # the innocent rank is not blamed: both are named, and so is the part no one covers
    spec = _spec((12, 4))
    boxes: list[Box] = [((0, 0), (6, 4)), ((0, 0), (6, 4))]
    match = r"ranks 0 and 1 publish the same block \[0:6, 0:4\]; no rank's block covers \[6:12, 0:4\]"
    with pytest.raises(LayoutError, match=match):
        make_layout(spec, "t", boxes)


def test_blocks_at_one_offset_with_other_shapes() -> None:
    spec = _spec((10,))
    with pytest.raises(
        LayoutError, match=r"ranks 0 and 1 publish blocks at the same offset \(0,\): \[0:4\] and \[0:6\]"
    ):
        make_layout(spec, "t", [((0,), (4,)), ((0,), (6,)), ((6,), (4,))])


def test_many_overlaps_are_counted_not_all_listed() -> None:
    spec = _spec((4,))
    boxes: list[Box] = [((0,), (4,))] * 6  # 15 pairs
    with pytest.raises(
        LayoutError, match=r"ranks 0 and 1 .*; ranks 0 and 2 .*; ranks 0 and 3 .*; 12 more pairs of ranks overlap"
    ):
        make_layout(spec, "t", boxes)


def test_partial_overlap_is_refused() -> None:
    spec = _spec((10,))
    boxes: list[Box] = [((0,), (6,)), ((4,), (6,))]
    with pytest.raises(LayoutError, match=r"ranks 0 and 1 publish overlapping blocks \[0:6\] and \[4:10\]"):
        make_layout(spec, "t", boxes)


def test_missing_cell_is_a_hole() -> None:
    spec = _spec((10, 10))
    boxes: list[Box] = [((0, 0), (5, 5)), ((0, 5), (5, 5)), ((5, 0), (5, 5))]
    with pytest.raises(LayoutError, match=r"array 't': no rank's block covers \[5:10, 5:10\] \(every element"):
        make_layout(spec, "t", boxes)


def test_array_not_starting_at_zero_is_a_hole() -> None:
    spec = _spec((10,))
    with pytest.raises(LayoutError, match=r"no rank's block covers \[0:2\]"):
        make_layout(spec, "t", [((2,), (8,))])


def test_gap_between_blocks_is_reported_as_a_hole() -> None:
    spec = _spec((10,))
    with pytest.raises(LayoutError, match=r"no rank's block covers \[3:5\]"):
        make_layout(spec, "t", [((0,), (3,)), ((5,), (5,))])


def test_block_out_of_bounds() -> None:
    spec = _spec((10, 4))
    with pytest.raises(LayoutError, match=r"rank 1: array 't' block \(5, 4\) at offset \(6, 0\) leaves the array"):
        make_layout(spec, "t", [((0, 0), (6, 4)), ((6, 0), (5, 4))])


def test_negative_offset_is_out_of_bounds() -> None:
    spec = _spec((10,))
    with pytest.raises(LayoutError, match=r"along dim 0"):
        check_block(spec, "t", 0, (-1,), (4,))


# -- several blocks per rank, and tilings that are not a rectilinear grid (#16, item 4) ----------


def test_brick_layout_cuts_the_crossed_block_into_chunks() -> None:
    # the cut at column 2 does not run across the whole array: rank 0's block fills two chunks
    spec = _spec((4, 4))
    boxes: list[Box] = [((0, 0), (2, 4)), ((2, 0), (2, 2)), ((2, 2), (2, 2))]
    layout = make_layout(spec, "t", boxes)
    assert layout.chunks == ((2, 2), (2, 2))
    assert [[p.index for p in parts] for parts in layout.parts] == [[(0, 0), (0, 1)], [(1, 0)], [(1, 1)]]
    assert [p.local for p in layout.parts[0]] == [(slice(0, 2, 1), slice(0, 2, 1)), (slice(0, 2, 1), slice(2, 4, 1))]
    data = np.arange(16.0).reshape(4, 4)
    np.testing.assert_array_equal(_assemble(layout, boxes, data), data)


def test_several_blocks_per_rank_on_a_regular_grid_stay_one_chunk_each() -> None:
    # two ranks, each owning two strips of a 2-D grid: the grid stays regular, one chunk per block
    spec = _spec((8, 6))
    boxes: list[Box] = [((0, 0), (2, 6)), ((4, 0), (2, 6)), ((2, 0), (2, 6)), ((6, 0), (2, 6))]
    layout = make_layout(spec, "t", boxes, owners=[0, 0, 1, 1])
    assert layout.chunks == ((2, 2, 2, 2), (6,))
    assert [p.index for p in _single(layout)] == [(0, 0), (2, 0), (1, 0), (3, 0)]
    data = np.arange(48.0).reshape(8, 6)
    np.testing.assert_array_equal(_assemble(layout, boxes, data), data)


def test_a_ranks_blocks_are_named_by_their_number() -> None:
    spec = _spec((8,))
    boxes: list[Box] = [((0,), (4,)), ((0,), (4,)), ((4,), (2,))]
    match = r"rank 0's block 0 and rank 0's block 1 publish the same block \[0:4\]; no rank's block covers \[6:8\]"
    with pytest.raises(LayoutError, match=match):
        make_layout(spec, "t", boxes, owners=[0, 0, 1])
    with pytest.raises(
        LayoutError, match=r"rank 1's block 1 and rank 2 publish overlapping blocks \[2:6\] and \[4:8\]"
    ):
        make_layout(spec, "t", [((0,), (2,)), ((2,), (4,)), ((4,), (4,))], owners=[1, 1, 2])


def _random_split(rng: np.random.Generator, shape: tuple[int, ...], pieces: int) -> list[Box]:
    """A random tiling of ``shape`` by cutting a random block in two, ``pieces - 1`` times (rarely rectilinear)."""
    boxes: list[Box] = [((0,) * len(shape), shape)]
    for _ in range(pieces - 1):
        k = int(rng.integers(len(boxes)))
        offset, extent = boxes[k]
        dims = [d for d, n in enumerate(extent) if n > 1]
        if not dims:
            continue
        d = int(rng.choice(dims))
        cut = int(rng.integers(1, extent[d]))
        first = (offset, tuple(cut if i == d else n for i, n in enumerate(extent)))
        second_offset = tuple(o + cut if i == d else o for i, o in enumerate(offset))
        second = (second_offset, tuple(n - cut if i == d else n for i, n in enumerate(extent)))
        boxes[k : k + 1] = [first, second]
    return boxes


def test_random_irregular_tilings_assemble_exactly() -> None:
    rng = np.random.default_rng(20261207)
    irregular = 0
    for case in range(200):
        ndim = int(rng.integers(1, 4))
        shape = tuple(int(n) for n in rng.integers(2, 11, size=ndim))
        boxes = _random_split(rng, shape, int(rng.integers(1, 9)))
        owners = sorted(int(r) for r in rng.integers(0, 3, size=len(boxes)))  # several blocks per rank
        select = []
        for n in shape:
            start = int(rng.integers(0, n))
            select.append(
                {"start": start, "stop": int(rng.integers(start + 1, n + 1)), "step": int(rng.integers(1, 4))}
            )
        spec = _spec(shape, select=select)
        layout = make_layout(spec, "t", boxes, owners=owners)
        data = rng.random(shape)
        np.testing.assert_array_equal(
            _assemble(layout, boxes, data), data[_region_slices(spec)], err_msg=f"case {case}"
        )
        irregular += any(len(parts) > 1 for parts in layout.parts)
    assert irregular > 10  # the generator does make tilings that are not a rectilinear grid


def test_wrong_ndim() -> None:
    spec = _spec((4, 4))
    with pytest.raises(LayoutError, match=r"rank 3: array 't' is 2-D in the contract, got a block of shape \(4,\)"):
        check_block(spec, "t", 3, (0,), (4,))


def test_block_shape_differs_from_contract_block() -> None:
    spec = _spec((8, 8), block=(4, 4))
    with pytest.raises(LayoutError, match=r"rank 0: array 't' block has shape \(3, 4\); the contract says \(4, 4\)"):
        check_block(spec, "t", 0, (0, 0), (3, 4))


@pytest.mark.parametrize("size", [1, 3, 5])
def test_rank_count_must_match_uniform_grid(size: int) -> None:
    spec = _spec((8, 8), block=(4, 4))
    with pytest.raises(LayoutError, match=rf"tiles shape \[8, 8\] into 4 blocks but there are {size} ranks"):
        default_offset(spec, 0, size, "t")


def test_default_offset_needs_uniform_block() -> None:
    with pytest.raises(LayoutError, match=r"array 't' has no uniform 'block'.*needs offset="):
        default_offset(_spec((8,)), 0, 1, "t")

"""The shared memory ring both sides map: slots, header words, mapping lifetime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from doreisa.runtime.ring import ALIGN, ASLEEP, NAN, POSTS, ShmRing, slot_bytes


@pytest.mark.parametrize(
    ("nbytes", "size"), [(0, ALIGN), (1, ALIGN), (ALIGN, ALIGN), (ALIGN + 1, 2 * ALIGN), (1000, 1024)]
)
def test_slot_bytes_are_aligned(nbytes: int, size: int) -> None:
    assert slot_bytes(nbytes) == size


def test_ring_is_shared_between_mappings(tmp_path: Path) -> None:
    path = str(tmp_path / "ring")
    size = slot_bytes(6 * 8)
    writer = ShmRing(path, 3, size, create=True)
    reader = ShmRing(path, 3, size, create=False)
    assert Path(path).stat().st_size == writer.header_bytes + 3 * size
    for slot in range(3):
        writer.view(slot, (2, 3), np.dtype("float64"))[...] = np.arange(6.0).reshape(2, 3) + 10 * slot
    for slot in range(3):
        np.testing.assert_array_equal(
            reader.view(slot, (2, 3), np.dtype("float64")), np.arange(6.0).reshape(2, 3) + 10 * slot
        )
    reader.view(1, (6,), np.dtype("float64"))[0] = -1.0  # both ways
    assert writer.view(1, (2, 3), np.dtype("float64"))[0, 0] == -1.0
    reader.close()
    writer.close(unlink=True)
    assert not Path(path).exists()


def test_views_are_one_per_slot_and_shared(tmp_path: Path) -> None:
    path = str(tmp_path / "ring")
    writer = ShmRing(path, 3, 64, create=True)
    reader = ShmRing(path, 3, 64, create=False)
    views = writer.views((2, 2), np.dtype("int64"))
    assert [v.shape for v in views] == [(2, 2)] * 3
    for slot, view in enumerate(views):
        view[...] = slot
    assert [int(v.sum()) for v in reader.views((4,), np.dtype("int64"))] == [0, 4, 8]
    del views
    reader.close()
    writer.close(unlink=True)


def test_view_offsets_per_slot(tmp_path: Path) -> None:
    path = str(tmp_path / "ring")
    ring = ShmRing(path, 4, 128, create=True)
    for slot in range(4):
        ring.view(slot, (3,), np.dtype("int32"))[...] = [slot + 1, slot + 2, slot + 3]
    ring.close()
    raw = np.fromfile(path, dtype=np.uint8)
    assert ring.header_bytes % 4096 == 0 and len(raw) == ring.header_bytes + 4 * 128
    for slot in range(4):
        at = ring.header_bytes + slot * 128
        np.testing.assert_array_equal(raw[at : at + 12].view(np.int32), [slot + 1, slot + 2, slot + 3])
        assert not raw[at + 12 : at + 128].any()  # the rest of the slot is untouched


def test_header_words_are_shared(tmp_path: Path) -> None:
    path = str(tmp_path / "ring")
    rank = ShmRing(path, 600, 64, create=True)  # 2 + 5 x 600 words: the header spans six pages
    node = ShmRing(path, 600, 64, create=False)
    assert rank.header_bytes == 6 * 4096
    assert (rank.control[ASLEEP], rank.control[POSTS]) == (1, 0)  # asleep until the node says otherwise
    assert list(rank.freed[:3]) == list(rank.posted[:3]) == [0, 0, 0]
    node.control[ASLEEP] = 0
    node.freed[599] += 1
    node.freed[1] = 2**40
    rank.posted[599] = 3
    rank.steps[599], rank.times[599], rank.times[0] = -(2**40), 0.25, NAN
    rank.tags[599], rank.tags[0] = 2**63 + 5, 1  # one bit per trigger: 64 of them
    rank.control[POSTS] += 1
    assert (rank.control[ASLEEP], rank.freed[599], rank.freed[1]) == (0, 1, 2**40)
    assert (node.control[POSTS], node.posted[599], node.steps[599], node.times[599]) == (1, 3, -(2**40), 0.25)
    assert (node.tags[599], node.tags[0], node.tags[598]) == (2**63 + 5, 1, 0)
    assert node.times[0] != node.times[0] and node.posted[598] == node.freed[598] == 0  # the words do not overlap
    rank.views((8,), np.dtype("float64"))[599][...] = 7.0  # the last slot ends at the end of the file
    assert node.view(599, (8,), np.dtype("float64"))[-1] == 7.0
    node.close()
    rank.close(unlink=True)


def test_ring_create_refuses_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "ring"
    path.write_bytes(b"x")
    with pytest.raises(FileExistsError):
        ShmRing(str(path), 1, 64, create=True)


def test_ring_close_unlinks(tmp_path: Path) -> None:
    path = str(tmp_path / "ring")
    ring = ShmRing(path, 2, 64, create=True)
    ring.close(unlink=True)
    assert not Path(path).exists()
    ring.close(unlink=True)  # twice is harmless


_LIVE_VIEW = """
import sys
import numpy as np
from doreisa.runtime.ring import ShmRing
ring = ShmRing(sys.argv[1], 2, 64, create=True)
view = ring.view(0, (8,), np.dtype("float64"))
ring.close(unlink=True)
view[0] = 1.0
print("ok", view[0])
"""


def test_ring_close_keeps_mapping_for_live_view(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LIVE_VIEW, str(tmp_path / "ring")], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok 1.0")

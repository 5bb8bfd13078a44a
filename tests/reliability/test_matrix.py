"""docs/reliability.md's test matrix names real tests, and every case of the matrix once."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
CASES = [f"L{i}" for i in range(1, 9)] + [f"F{i}" for i in range(1, 13)]
CASES += [f"B{i}" for i in range(1, 13)] + ["S1", "S2"]


def _rows() -> dict[str, str]:
    text = (ROOT / "docs" / "reliability.md").read_text()
    section = text.split("## The test matrix", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([LFBS]\d+) \| [^|]+ \| (.+) \|$", section, flags=re.MULTILINE)
    assert [case for case, _ in rows] == CASES, "every case once, in the matrix's order"
    return dict(rows)


def test_every_named_test_exists() -> None:
    named = 0
    for case, tests in _rows().items():
        for path, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", tests):
            source = (ROOT / path).read_text()
            assert re.search(rf"^def {name}\(", source, flags=re.MULTILINE), f"{case}: no {name} in {path}"
            named += 1
        for prefix in re.findall(r"every `(test_B\d+_)\*`", tests):
            source = (ROOT / "tests" / "reliability" / "test_bad_input.py").read_text()
            assert re.search(rf"^def {prefix}\w+\(", source, flags=re.MULTILINE), f"{case}: no {prefix}*"
            named += 1
    assert named >= 30


def test_a_case_without_a_test_says_not_yet() -> None:
    for case, tests in _rows().items():
        assert "`tests/" in tests or "every `test_B" in tests or "not yet" in tests, case

"""Bad contracts: each is refused with a ContractError naming ``file:line``, the key path and what is valid."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from doreisa.cli import main
from doreisa.contract import load_contract, loader
from doreisa.contract.loader import MAX_NODES
from doreisa.errors import ContractError

# Lines 1-5; cases append below, so their line numbers start at 6.
ARRAY = """\
arrays:
  temperature:
    dtype: float64
    shape: [16, 16]
    block: [8, 8]
"""


@dataclass(frozen=True)
class Bad:
    id: str
    text: str
    line: int
    key: str | None  # the key path in the message; None for errors below the key level (YAML syntax)
    says: str  # a fragment that says what is valid or what to do


def _trigger(when: str, until: str | None = None) -> str:
    until_line = f"    until: {until}\n" if until is not None else ""
    return ARRAY + f"triggers:\n  - name: t\n    when: {when}\n{until_line}    action:\n      cadence: {{every: 1}}\n"


CASES = [
    # --- YAML itself
    Bad("malformed-yaml", "arrays:\n  temperature: [1, 2\ncadence: {every: 1}\n", 3, None, "not valid YAML"),
    Bad("tab-indent", ARRAY + "\tcadence: {every: 1}\n", 6, None, "use spaces"),
    Bad("empty-file", "", 1, None, "must declare at least 'arrays:'"),
    Bad("only-comments", "# nothing here\n# at all\n", 1, None, "must declare at least 'arrays:'"),
    Bad("top-level-list", "- arrays\n- cadence\n", 1, None, "top level must be a mapping"),
    Bad("top-level-scalar", "temperature\n", 1, None, "top level must be a mapping"),
    Bad("two-documents", ARRAY + "---\n" + ARRAY, 6, None, "not valid YAML"),
    Bad(
        "duplicate-top-key", ARRAY + "cadence: {every: 1}\ncadence: {every: 2}\n", 7, "cadence", "first given on line 6"
    ),
    Bad("duplicate-nested-key", ARRAY + "    dtype: float32\n", 6, "arrays.temperature.dtype", "first given on line 3"),
    Bad(
        "duplicate-array",
        ARRAY + "  temperature:\n    dtype: float32\n    shape: [4]\n",
        6,
        "arrays.temperature",
        "first given on line 2",
    ),
    Bad("custom-tag", ARRAY + "cadence: !every 3\n", 6, "cadence", "plain data"),
    Bad("date-value", ARRAY + "cadence:\n  every: 1\n  start: 2024-01-01\n", 8, "cadence.start", "quote a value"),
    # --- unknown and misspelled keys
    Bad("misspelled-top", ARRAY + "cadense: {every: 1}\n", 6, "cadense", "did you mean 'cadence'?"),
    Bad(
        "misspelled-array-key", ARRAY.replace("dtype", "dtpye"), 3, "arrays.temperature.dtpye", "did you mean 'dtype'?"
    ),
    Bad("misspelled-window", ARRAY + "    windw: 2\n", 6, "arrays.temperature.windw", "did you mean 'window'?"),
    Bad("misspelled-cadence-key", ARRAY + "cadence:\n  evry: 10\n", 7, "cadence.evry", "did you mean 'every'?"),
    Bad(
        "misspelled-analytic-key",
        ARRAY + "analytics:\n  - fucntion: mean\n    arrays: [temperature]\n",
        7,
        "analytics[0].fucntion",
        "did you mean 'function'?",
    ),
    Bad("unknown-top-key", ARRAY + "colour: blue\n", 6, "colour", "valid keys here: version, arrays, cadence"),
    # --- wrong types and missing keys
    Bad("shape-is-a-string", ARRAY.replace("[16, 16]", "sixteen"), 4, "arrays.temperature.shape", "a list"),
    Bad("shape-has-a-bool", ARRAY.replace("[16, 16]", "[true, 16]"), 4, "arrays.temperature.shape[0]", "integer"),
    Bad("shape-has-a-float", ARRAY.replace("[16, 16]", "[16, 2.5]"), 4, "arrays.temperature.shape[1]", "integer"),
    Bad("shape-has-a-quoted-int", ARRAY.replace("[16, 16]", "['16', 16]"), 4, "arrays.temperature.shape[0]", "integer"),
    Bad("unknown-dtype", ARRAY.replace("float64", "float65"), 3, "arrays.temperature.dtype", "'float32', 'float64'"),
    Bad("every-is-a-string", ARRAY + "cadence: {every: '10'}\n", 6, "cadence.every", "integer"),
    Bad("every-is-fractional", ARRAY + "cadence:\n  every: 2.5\n", 7, "cadence.every", "integer"),
    Bad("arrays-is-a-list", "arrays:\n  - temperature\n", 1, "arrays", "valid dictionary"),
    Bad("arrays-is-empty", "cadence: {every: 1}\narrays: {}\n", 2, "arrays", "at least 1 item"),
    Bad("arrays-missing", "cadence:\n  every: 1\n", 1, "arrays", "required key 'arrays' is missing"),
    Bad("dtype-missing", "arrays:\n  temperature:\n    shape: [4]\n", 2, "arrays.temperature.dtype", "is missing"),
    Bad("version-2", "version: 2\n" + ARRAY, 1, "version", "should be 1"),
    Bad("version-true", ARRAY + "version: true\n", 6, "version", "the integer 1"),
    Bad("negative-timeout", ARRAY + "timeouts:\n  step: -1\n", 7, "timeouts.step", "greater than 0"),
    Bad(
        "unknown-output-format",
        ARRAY + "outputs:\n  formats: [hdf5]\n",
        7,
        "outputs.formats[0]",
        "registered: npy, csv",
    ),
    # --- shapes, blocks, dims, select
    Bad("negative-shape", ARRAY.replace("[16, 16]", "[16, -4]"), 4, "arrays.temperature.shape[1]", "greater than 0"),
    Bad("zero-shape", ARRAY.replace("[16, 16]", "[0, 16]"), 4, "arrays.temperature.shape[0]", "greater than 0"),
    Bad("empty-shape", ARRAY.replace("[16, 16]", "[]"), 4, "arrays.temperature.shape", "at least 1 item"),
    Bad("block-does-not-tile", ARRAY.replace("[8, 8]", "[5, 8]"), 5, "arrays.temperature.block", "multiple"),
    Bad("block-dims-mismatch", ARRAY.replace("[8, 8]", "[8, 8, 1]"), 5, "arrays.temperature.block", "has 3 dims"),
    Bad("dims-count-mismatch", ARRAY + "    dims: [y, x, z]\n", 6, "arrays.temperature.dims", "has 3 dims"),
    Bad("dims-repeat", ARRAY + "    dims: [x, x]\n", 6, "arrays.temperature.dims", "repeat a name"),
    Bad(
        "select-outside",
        ARRAY + "    select:\n      - {start: 0, stop: 20}\n      - {}\n",
        7,
        "arrays.temperature.select[0]",
        "0 <= start < stop <= 16",
    ),
    Bad(
        "select-start-outside",
        ARRAY + "    select:\n      - {}\n      - {start: 16}\n",
        8,
        "arrays.temperature.select[1]",
        "0 <= start < stop <= 16",
    ),
    Bad(
        "select-empty",
        ARRAY + "    select:\n      - {start: 4, stop: 4}\n      - {}\n",
        7,
        "arrays.temperature.select[0]",
        "empty",
    ),
    Bad(
        "select-unknown-dim",
        ARRAY + "    dims: [y, x]\n    select:\n      z: {start: 1}\n",
        8,
        "arrays.temperature.select.z",
        "dims are ['y', 'x']",
    ),
    Bad(
        "select-by-name-without-dims",
        ARRAY + "    select:\n      x: {start: 1}\n",
        6,
        "arrays.temperature.select",
        "needs valid 'dims'",
    ),
    Bad(
        "select-negative-start",
        ARRAY + "    select:\n      - {start: -1}\n      - {}\n",
        7,
        "arrays.temperature.select[0].start",
        "greater than or equal to 0",
    ),
    # --- cadence
    Bad("cadence-both", ARRAY + "cadence:\n  every: 10\n  every_time: 0.5\n", 8, "cadence.every_time", "only one of"),
    Bad("cadence-neither", ARRAY + "cadence:\n  start: 10\n", 6, "cadence", "exactly one of 'every'"),
    Bad(
        "cadence-stop-before-start",
        ARRAY + "cadence:\n  every: 1\n  start: 50\n  stop: 10\n",
        9,
        "cadence.stop",
        "use stop >= start",
    ),
    Bad("cadence-fractional-start", ARRAY + "cadence:\n  every: 1\n  start: 1.5\n", 8, "cadence.start", "whole step"),
    Bad(
        "array-cadence-both",
        ARRAY + "    cadence: {every: 1, every_time: 1.0}\n",
        6,
        "arrays.temperature.cadence.every_time",
        "only one of",
    ),
    # --- references between sections
    Bad("trigger-unknown-array", _trigger("max(pressure) > 1"), 8, "triggers[0].when", "known arrays: ['temperature']"),
    Bad("trigger-bare-array", _trigger("temperature > 1"), 8, "triggers[0].when", "max(temperature)"),
    Bad("trigger-until-unknown-array", _trigger("step > 1", "min(pressure) < 1"), 9, "triggers[0].until", "known"),
    Bad(
        "trigger-action-unknown-array",
        _trigger("step > 1") + "      arrays: [temperature, pressure]\n",
        11,
        "triggers[0].action.arrays[1]",
        "known arrays: temperature",
    ),
    Bad(
        "analytic-unknown-array",
        ARRAY + "analytics:\n  - function: mean\n    arrays: [pressure]\n",
        8,
        "analytics[0].arrays[0]",
        "known arrays: temperature",
    ),
    Bad(
        "analytic-unknown-array-by-param",
        ARRAY + "analytics:\n  - function: mean\n    arrays:\n      x: pressure\n",
        9,
        "analytics[0].arrays.x",
        "known arrays: temperature",
    ),
    Bad(
        "analytic-no-array",
        ARRAY + "analytics:\n  - function: mean\n    arrays: []\n",
        8,
        "analytics[0].arrays",
        "at least one array",
    ),
    Bad(
        "analytic-window-too-large",
        ARRAY + "    window: 2\nanalytics:\n  - function: mean\n    arrays: [temperature]\n    window: 3\n",
        10,
        "analytics[0].window",
        "raise arrays.temperature.window",
    ),
    Bad(
        "duplicate-trigger-names",
        _trigger("step > 1") + "  - name: t\n    when: step > 2\n    action:\n      cadence: {every: 2}\n",
        11,
        "triggers[1].name",
        "unique 'name'",
    ),
    Bad(
        "duplicate-analytic-labels",
        ARRAY
        + "analytics:\n  - function: mean\n    arrays: [temperature]\n  - function: mean\n    arrays: [temperature]\n",
        9,
        "analytics[1].function",
        "already used by analytics[0]",
    ),
    Bad(
        "duplicate-analytic-names",
        ARRAY + "analytics:\n  - {function: mean, name: m, arrays: [temperature]}\n"
        "  - {function: max, name: m, arrays: [temperature]}\n",
        8,
        "analytics[1].name",
        "unique 'name'",
    ),
    Bad("reserved-array-max", ARRAY.replace("temperature", "max"), 2, "arrays.max", "rename the array"),
    Bad("reserved-array-step", ARRAY.replace("temperature", "step"), 2, "arrays.step", "reserved word"),
    Bad("reserved-array-keyword", ARRAY.replace("temperature", "lambda"), 2, "arrays.lambda", "Python keywords"),
    Bad("array-name-not-identifier", ARRAY.replace("temperature", "9temp"), 2, "arrays.9temp", "should match pattern"),
    # --- trigger expressions that try to run code
    Bad("inject-import", _trigger("\"__import__('os').system('id')\""), 8, "triggers[0].when", "Allowed: numbers"),
    Bad("inject-bases", _trigger("().__class__.__bases__"), 8, "triggers[0].when", "attribute access"),
    Bad("inject-attribute", _trigger("temperature.__class__"), 8, "triggers[0].when", "attribute access"),
    Bad("inject-subscript", _trigger("'[1][0]'"), 8, "triggers[0].when", "subscripting"),
    Bad("inject-lambda", _trigger("'lambda: 1'"), 8, "triggers[0].when", "lambda"),
    Bad("inject-string", _trigger("\"'rm -rf'\""), 8, "triggers[0].when", "the constant 'rm -rf'"),
    Bad("inject-dunder-name", _trigger("__builtins__ > 1"), 8, "triggers[0].when", "the name '__builtins__'"),
    Bad("inject-until", _trigger("step > 1", "\"eval('1')\""), 9, "triggers[0].until", "unknown function 'eval'"),
    Bad("deep-parentheses", _trigger("(" * 100_000 + "1" + ")" * 100_000), 8, "triggers[0].when", "at most 1000"),
    Bad("megabyte-expression", _trigger("1" + " + 1" * 250_000), 8, "triggers[0].when", "at most 1000"),
    Bad("nested-too-deeply", _trigger("(" * 40 + "step" + ")" * 40 + " > 1"), 8, "triggers[0].when", "limit 32"),
    # --- monitors
    Bad(
        "monitor-unknown-array",
        ARRAY + "monitors:\n  - array: pressure\n    reductions: [max]\n",
        7,
        "monitors[0].array",
        "unknown array 'pressure'; known arrays: temperature",
    ),
    Bad(
        "monitor-select-outside",
        ARRAY
        + "monitors:\n  - array: temperature\n    reductions: [max]\n    select:\n      - {}\n      - {stop: 20}\n",
        11,
        "monitors[0].select[1]",
        "outside dimension 1 of 'temperature' (size 16)",
    ),
    Bad(
        "monitor-select-dims-mismatch",
        ARRAY + "monitors:\n  - array: temperature\n    reductions: [max]\n    select: [{}]\n",
        9,
        "monitors[0].select",
        "has 1 dims but 'temperature' has 2",
    ),
    Bad(
        "monitor-bad-reduction",
        ARRAY + "monitors:\n  - array: temperature\n    reductions: [max, std]\n",
        8,
        "monitors[0].reductions[1]",
        "'max', 'min', 'sum', 'mean' or 'nonfinite'",
    ),
    Bad(
        "monitor-no-reduction",
        ARRAY + "monitors:\n  - array: temperature\n    reductions: []\n",
        8,
        "monitors[0].reductions",
        "at least 1 item",
    ),
    Bad(
        "monitor-misspelled-key",
        ARRAY + "monitors:\n  - array: temperature\n    reductions: [max]\n    evry: 5\n",
        9,
        "monitors[0].evry",
        "did you mean 'every'?",
    ),
    # --- feedback
    Bad("feedback-bad-mode", ARRAY + "feedback:\n  mode: sync\n", 7, "feedback.mode", "'async' or 'deterministic'"),
    Bad("feedback-lag-zero", ARRAY + "feedback:\n  mode: deterministic\n  lag: 0\n", 8, "feedback.lag", "than 0"),
    Bad("feedback-sync-every-zero", ARRAY + "feedback:\n  sync_every: 0\n", 7, "feedback.sync_every", "than 0"),
    Bad(
        "feedback-misspelled-key",
        ARRAY + "feedback:\n  enable: true\n",
        7,
        "feedback.enable",
        "did you mean 'enabled'?",
    ),
    # --- preprocess
    Bad(
        "preprocess-unknown",
        ARRAY + "    preprocess: gzip\n",
        6,
        "arrays.temperature.preprocess.function",
        "registered: downsample, cast, stats, or 'module:function'",
    ),
    Bad(
        "preprocess-unknown-in-mapping",
        ARRAY + "    preprocess:\n      function: gzip\n",
        7,
        "arrays.temperature.preprocess.function",
        "unknown preprocess 'gzip'",
    ),
    Bad(
        "downsample-without-factor",
        ARRAY + "    preprocess: downsample\n",
        6,
        "arrays.temperature.preprocess.params",
        "takes params ['factor']",
    ),
    Bad(
        "downsample-factor-zero",
        ARRAY + "    preprocess:\n      function: downsample\n      params: {factor: 0}\n",
        8,
        "arrays.temperature.preprocess.params.factor",
        "must be a positive integer, got 0",
    ),
    Bad(
        "cast-bad-dtype",
        ARRAY + "    preprocess:\n      function: cast\n      params: {dtype: float16}\n",
        8,
        "arrays.temperature.preprocess.params.dtype",
        "must be one of bool, int8,",
    ),
    Bad(
        "stats-with-params",
        ARRAY + "    preprocess:\n      function: stats\n      params: {bins: 4}\n",
        8,
        "arrays.temperature.preprocess.params",
        "takes params none; got ['bins']",
    ),
    # --- enumerations
    Bad(
        "bad-backpressure-policy",
        ARRAY + "backpressure:\n  policy: drop\n",
        7,
        "backpressure.policy",
        "'block', 'skip' or 'latest'",
    ),
    Bad("bad-max-in-flight", ARRAY + "backpressure:\n  max_in_flight: 0\n", 7, "backpressure.max_in_flight", "than 0"),
    Bad("bad-staging", ARRAY + "backpressure:\n  staging_mb: 0.5\n", 7, "backpressure.staging_mb", "integer"),
    Bad("zero-staging", ARRAY + "backpressure:\n  staging_mb: 0\n", 7, "backpressure.staging_mb", "than 0"),
    Bad("zero-poll", ARRAY + "handover:\n  poll_ms: 0\n", 7, "handover.poll_ms", "than 0"),
    Bad("slow-poll", ARRAY + "handover:\n  poll_ms: 5000\n", 7, "handover.poll_ms", "less than or equal to 1000"),
    Bad("negative-linger", ARRAY + "handover: {linger_ms: -1}\n", 6, "handover.linger_ms", "or equal to 0"),
    Bad("handover-typo", ARRAY + "handover: {linger: 10}\n", 6, "handover.linger", "linger_ms"),
    Bad(
        "bad-placement-mode",
        ARRAY + "placement:\n  mode: remote\n",
        7,
        "placement.mode",
        "'in_situ', 'in_transit' or 'auto'",
    ),
    Bad(
        "bad-array-placement-mode",
        ARRAY + "    placement: {mode: elsewhere}\n",
        6,
        "arrays.temperature.placement.mode",
        "'in_situ', 'in_transit' or 'auto'",
    ),
]


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _line_for(message: str, path: Path, line: int, key: str | None = None) -> str:
    """The line of ``message`` that reports ``path:line`` (and ``key``, if given)."""
    for text in message.splitlines():
        if f"{path}:{line}:" in text and (key is None or f": {key}: " in text):
            return text
    raise AssertionError(f"no {path}:{line}: {key or ''} in the message:\n{message}")


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 35
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_contract_is_refused_with_location(case: Bad, tmp_path: Path) -> None:
    path = _write(tmp_path, case.text)
    with pytest.raises(ContractError) as info:
        load_contract(path)
    message = str(info.value)
    reported = _line_for(message, path, case.line, case.key)
    assert case.says in reported, message
    assert "Traceback" not in message


PURE_CASES = [c for c in CASES if len(c.text) < 10_000]  # the pure-Python parser is slow on 1 MB


@pytest.mark.parametrize("case", PURE_CASES, ids=[c.id for c in PURE_CASES])
def test_pure_python_yaml_gives_the_same_locations(case: Bad, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without libyaml, PyYAML's own parser is used: same lines, same key paths.
    monkeypatch.setattr(loader, "_SafeLoader", yaml.SafeLoader)
    path = _write(tmp_path, case.text)
    with pytest.raises(ContractError) as info:
        load_contract(path)
    _line_for(str(info.value), path, case.line, case.key)


@pytest.mark.parametrize(
    "tag",
    [
        '!!python/object/apply:os.system ["touch {marker}"]',
        "!!python/object/apply:subprocess.call [[touch, {marker}]]",
        "!!python/object/new:subprocess.Popen [[touch, {marker}]]",
        "!!python/name:os.system",
        '!!python/object:os.system {{cmd: "touch {marker}"}}',
    ],
)
def test_python_tags_are_never_executed(tag: str, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = _write(tmp_path, ARRAY + "cadence: " + tag.format(marker=marker) + "\n")
    with pytest.raises(ContractError, match=r"c\.yaml:6:10: cadence: the tag '!!python/.*' is not allowed"):
        load_contract(path)
    assert not marker.exists()


def test_python_tag_in_a_list_names_the_item(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = _write(tmp_path, ARRAY.replace("[16, 16]", f'[16, !!python/object/apply:os.system ["touch {marker}"]]'))
    with pytest.raises(ContractError, match=r"c\.yaml:4:17: arrays\.temperature\.shape\[1\]: the tag"):
        load_contract(path)
    assert not marker.exists()


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):  # 10**9 values once expanded
        previous = "a" if i == 1 else f"b{i - 1}"
        lines.append(f"b{i}: &b{i} [" + ", ".join([f"*{previous}"] * 10) + "]")
    path = _write(tmp_path, "\n".join(lines) + "\n" + ARRAY)
    with pytest.raises(ContractError, match=f"more than {MAX_NODES} values"):
        load_contract(path)


def test_self_referencing_alias_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "cadence: &c [*c]\n" + ARRAY)
    with pytest.raises(ContractError, match=r"c\.yaml: the YAML is nested too deeply, or an alias contains itself"):
        load_contract(path)


def test_deeply_nested_yaml_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "cadence: " + "[" * 100_000 + "]" * 100_000 + "\n" + ARRAY)
    with pytest.raises(ContractError, match=r"c\.yaml:.*(nesting depth|nested too deeply)"):
        load_contract(path)


@pytest.mark.parametrize("value", ["!!int abc", "!!bool maybe", "!!float x"])
def test_explicit_tag_on_a_bad_value(value: str, tmp_path: Path) -> None:
    path = _write(tmp_path, ARRAY + f"cadence: {{every: {value}}}\n")
    with pytest.raises(ContractError, match=r"c\.yaml: a value cannot be read .*without !! tags"):
        load_contract(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match=r"nope\.yaml: cannot read the contract"):
        load_contract(tmp_path / "nope.yaml")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"arrays:\n  t\xff: 1\n")
    with pytest.raises(ContractError, match=r"c\.yaml: cannot read the contract"):
        load_contract(path)


def test_every_error_is_reported(tmp_path: Path) -> None:
    text = ARRAY.replace("float64", "float65").replace("[8, 8]", "[8, 0]") + "backpressure: {policy: drop}\n"
    with pytest.raises(ContractError) as info:
        load_contract(_write(tmp_path, text))
    message = str(info.value)
    assert "(3 errors)" in message
    _line_for(message, tmp_path / "c.yaml", 3, "arrays.temperature.dtype")
    _line_for(message, tmp_path / "c.yaml", 5, "arrays.temperature.block[1]")
    _line_for(message, tmp_path / "c.yaml", 6, "backpressure.policy")


def test_array_named_like_a_union_tag_keeps_its_path(tmp_path: Path) -> None:
    # pydantic inserts 'int', 'str', ... into locations for unions; a real key of that name must stay.
    path = _write(tmp_path, ARRAY.replace("temperature", "int").replace("float64", "float65"))
    with pytest.raises(ContractError, match=r"c\.yaml:3:5: arrays\.int\.dtype: "):
        load_contract(path)


@pytest.mark.parametrize("case", CASES[:12], ids=[c.id for c in CASES[:12]])
def test_cli_reports_bad_contract(case: Bad, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, case.text)
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{path}:{case.line}:" in err
    assert "Traceback" not in err


def test_cli_subprocess_bad_contract_has_no_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, ARRAY + "cadence:\n  every: 1\n  start: 50\n  stop: 10\n")
    result = subprocess.run(
        [sys.executable, "-m", "doreisa.cli", "validate", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{path}:9:" in result.stderr
    assert "cadence.stop" in result.stderr


def test_cli_subprocess_injection_has_no_traceback(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = _write(tmp_path, _trigger(f"\"__import__('os').system('touch {marker}')\""))
    result = subprocess.run(
        [sys.executable, "-m", "doreisa.cli", "validate", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "triggers[0].when" in result.stderr
    assert not marker.exists()


def test_cli_one_error_per_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, ARRAY, "good.yaml")
    bad_yaml = _write(tmp_path, "arrays: [\n", "bad_yaml.yaml")
    bad_model = _write(tmp_path, ARRAY.replace("float64", "float65").replace("[8, 8]", "[8, 0]"), "bad_model.yaml")
    assert main(["validate", str(good), str(bad_yaml), str(bad_model)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{good}: ok (1 arrays: temperature; 0 analytics; 0 triggers)"]
    headlines = [line for line in err.splitlines() if not line.startswith(" ")]
    assert len(headlines) == 2
    assert headlines[0].startswith(f"{bad_yaml}:")
    assert headlines[1].startswith(f"{bad_model}: invalid contract (2 errors)")
    assert "Traceback" not in err


def test_cli_quiet_prints_only_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, ARRAY, "good.yaml")
    assert main(["validate", "--quiet", str(good)]) == 0
    assert capsys.readouterr() == ("", "")


def test_problems_across_sections_are_reported_together(tmp_path: Path) -> None:
    # one fix-and-rerun cycle for all of them, each at its own line
    path = tmp_path / "c.yaml"
    path.write_text(
        ARRAY
        + "monitors:\n"
        + "  - {array: temperatur, reductions: [max]}\n"
        + "triggers:\n"
        + "  - {name: hot, when: 'max(temp) > 1', action: {cadence: {every: 1}}}\n"
        + "  - {name: hot, when: 'step > 1', action: {cadence: {every: 2}}}\n"
        + "analytics:\n"
        + "  - {function: mean, arrays: [pressure]}\n"
    )
    with pytest.raises(ContractError) as caught:
        load_contract(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: invalid contract (4 errors)"
    assert [line.split(": ", 2)[1] for line in lines[1:]] == [
        "triggers[1].name",
        "triggers[0].when",
        "analytics[0].arrays[0]",
        "monitors[0].array",
    ]
    assert all(line.startswith(f"  {path}:") for line in lines[1:])
    assert "unknown array 'pressure'" in lines[3] and "unknown array 'temperatur'" in lines[4]

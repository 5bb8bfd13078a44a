"""Every example contract loads, and ``doreisa validate`` accepts it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from doreisa.cli import main
from doreisa.contract import Contract, load_contract

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(
    {*ROOT.glob("examples/contracts/*.yaml"), *ROOT.glob("examples/**/contract*.yaml")},
)


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {
        "minimal.yaml",
        "windowed.yaml",
        "multi_array.yaml",
        "triggers.yaml",
        "monitor_trigger.yaml",
        "steering.yaml",
        "block_stats.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=_id)
def test_example_loads(path: Path) -> None:
    contract = load_contract(path)
    assert isinstance(contract, Contract)
    assert contract.arrays


@pytest.mark.parametrize("path", EXAMPLES, ids=_id)
def test_example_validates(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: ok (")
    assert err == ""


@pytest.mark.parametrize("path", EXAMPLES, ids=_id)
def test_example_trigger_expressions_parse(path: Path) -> None:
    contract = load_contract(path)
    assert set(contract.trigger_expressions) == {t.name for t in contract.triggers}


def test_validate_all_examples_in_a_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "doreisa.cli", "validate", *map(str, EXAMPLES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == len(EXAMPLES)


@pytest.mark.parametrize("path", sorted(ROOT.glob("examples/contracts/*.yaml")), ids=_id)
def test_feature_examples_bind_to_the_builtin_analytics(path: Path) -> None:
    # The feature examples use built-ins only; examples/heat registers its own (--analytics).
    from doreisa.analytics import bind_analytics, default_registry

    bind_analytics(load_contract(path), default_registry)


def test_monitor_trigger_example_is_evaluated_in_the_simulation() -> None:
    contract = load_contract(ROOT / "examples" / "contracts" / "monitor_trigger.yaml")
    assert contract.monitored == {("max", "temperature")}
    assert contract.trigger_in_simulation("hot_spot")
    assert not contract.uses_feedback  # no round trip to the analytics


def test_triggers_example_is_evaluated_by_the_analytics() -> None:
    contract = load_contract(ROOT / "examples" / "contracts" / "triggers.yaml")
    assert not contract.trigger_in_simulation("hot_spot")
    assert contract.uses_feedback


def test_steering_example_is_deterministic_with_lag_3() -> None:
    contract = load_contract(ROOT / "examples" / "contracts" / "steering.yaml")
    assert (contract.feedback.mode, contract.feedback.lag, contract.feedback.enabled) == ("deterministic", 3, True)
    assert not contract.trigger_in_simulation("turbulent")
    assert contract.uses_feedback


def test_block_stats_example_uses_the_stats_preprocess() -> None:
    contract = load_contract(ROOT / "examples" / "contracts" / "block_stats.yaml")
    preprocess = contract.arrays["temperature"].preprocess
    assert preprocess is not None
    assert (preprocess.function, preprocess.params) == ("stats", {})


def test_burst_example_keeps_the_node_actor_polling_between_bursts() -> None:
    contract = load_contract(ROOT / "examples" / "contracts" / "burst_staging.yaml")
    assert (contract.handover.poll_ms, contract.handover.linger_ms) == (2.0, 1000.0)
    assert (contract.backpressure.max_in_flight, contract.backpressure.staging_mb) == (200, 32)


@pytest.mark.parametrize("path", EXAMPLES, ids=_id)
def test_example_names_the_schema_for_editors(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    schema = (path.parent / first.removeprefix("# yaml-language-server: $schema=")).resolve()
    assert first.startswith("# yaml-language-server: $schema=") and schema == ROOT / "docs" / "contract.schema.json"


@pytest.mark.parametrize("path", EXAMPLES, ids=_id)
def test_example_validates_with_its_analytics(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the heat examples name the demo's own analytics; the others only built-ins
    heat = ["--analytics", str(ROOT / "examples" / "heat" / "analytics.py")] if path.parent.name == "heat" else []
    assert main(["validate", str(path), "--analytics", "doreisa.analytics", *heat]) == 0, capsys.readouterr().err
    assert "functions not checked" not in capsys.readouterr().out


def test_validate_with_analytics_refuses_an_unknown_function(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("arrays:\n  t: {dtype: float64, shape: [4]}\nanalytics:\n  - {function: nope, arrays: [t]}\n")
    assert main(["validate", str(path)]) == 0  # functions are checked only with --analytics
    assert "functions not checked: see --analytics" in capsys.readouterr().out
    assert main(["validate", str(path), "--analytics", "doreisa.analytics"]) == 1
    err = capsys.readouterr().err
    assert f"{path}: cannot bind the contract's analytics" in err and "analytic 'nope' is not registered" in err


def test_doreisa_alone_prints_help_and_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    import doreisa

    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: doreisa") and "validate" in out and "run" in out
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"doreisa {doreisa.__version__}\n"

"""Layers import in one direction: light modules never pull in ray, dask or mpi4py (after xarray)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import doreisa

HEAVY = ("ray", "dask", "mpi4py")
MINIMAL = Path(__file__).resolve().parents[1] / "examples" / "contracts" / "minimal.yaml"


def _heavy_modules_after(statement: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running ``statement``."""
    code = f"import sys; {statement}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.split()


@pytest.mark.parametrize(
    "statement",
    [
        "import doreisa",
        "import doreisa.contract",
        "from doreisa import Contract, ContractError, load_contract",
        f"import doreisa.cli; doreisa.cli.main(['validate', '-q', {str(MINIMAL)!r}])",
        "import doreisa.cli; doreisa.cli.contract_json_schema_text()",
    ],
    ids=["doreisa", "contract", "from-doreisa", "cli-validate", "cli-schema"],
)
def test_contract_layer_has_no_runtime_deps(statement: str) -> None:
    assert _heavy_modules_after(statement) == []


@pytest.mark.parametrize("statement", ["import doreisa.analytics", "import doreisa; doreisa.analytic"])
def test_analytics_layer_has_dask_only(statement: str) -> None:
    assert _heavy_modules_after(statement) == ["dask"]


_BRIDGE_FILE = Path(doreisa.__file__).parent / "runtime" / "bridge.py"


@pytest.mark.skipif(
    not _BRIDGE_FILE.exists() or not importlib.util.find_spec("doreisa.runtime.bridge"),
    reason="doreisa.runtime.bridge is not written yet",
)
@pytest.mark.parametrize("statement", ["import doreisa.runtime.bridge", "from doreisa import Bridge"])
def test_bridge_is_light(statement: str) -> None:
    # A simulation rank imports only the bridge: it must start fast and stay small, whatever the analytics load.
    assert _heavy_modules_after(statement) == []

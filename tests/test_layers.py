"""Layers import in one direction: light modules never pull in ray, dask or mpi4py (after xarray).

Two kinds of check: a fresh interpreter's ``sys.modules`` after an import (what a user pays),
and a static read of every module's imports (what a contributor may write), so that a new
import across a boundary fails here even when it is lazy.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import doreisa

HEAVY = ("ray", "dask", "mpi4py")
MINIMAL = Path(__file__).resolve().parents[1] / "examples" / "contracts" / "minimal.yaml"
PACKAGE = Path(doreisa.__file__).parent


def _heavy_modules_after(statement: str, watch: tuple[str, ...] = HEAVY) -> list[str]:
    """The watched modules a fresh interpreter has loaded after running ``statement``."""
    code = f"import sys; {statement}; print(' '.join(m for m in {watch!r} if m in sys.modules))"
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


#: The rank side may import mpi4py where it is asked for ``MPI.COMM_WORLD``, never on import.
RANK_FORBIDDEN = ("ray", "dask", "doreisa.analytics", "doreisa.runtime.cluster", "doreisa.runtime.scheduling")


@pytest.mark.parametrize("statement", ["import doreisa.runtime.rank.bridge", "from doreisa import Bridge"])
def test_bridge_is_light(statement: str) -> None:
    # A simulation rank imports only the bridge: it must start fast and stay small, whatever the analytics load.
    # CuPy too: it is imported at the first block in device memory, never before (docs/gpu.md).
    assert _heavy_modules_after(statement, (*RANK_FORBIDDEN, "mpi4py", "cupy")) == []


#: What loads and validates a contract: a rank runs the plan compiled from it (runtime/plan.py), never these.
CONTRACT_LOADING = (
    "pydantic",
    "pydantic_core",
    "yaml",
    "doreisa.contract.document",
    "doreisa.contract.loader",
    "doreisa.contract.models",
)
#: A rank's whole start: a Bridge from the Welcome a node actor sends, a first publish with a monitor,
#: a trigger evaluated and a view copied (the Welcome is built by the test, in this process).
RANK_START = """
import msgspec, numpy as np, sys
from doreisa import Bridge
from doreisa.runtime.protocol import Welcome
from doreisa.runtime.rank.comm import SingleProcessComm
from doreisa.runtime.rank.inprocess import InProcessTransport
transport = InProcessTransport(msgspec.msgpack.decode(open(sys.argv[1], "rb").read(), type=Welcome))
bridge = Bridge(SingleProcessComm(), transport=transport)
for step in (4, 5):  # the trigger fires at 4 (max(t) > 5), and the view is copied from 5 on
    bridge.publish("t", np.full((8, 8), 9.0), step=step)
assert [(p.array, p.step) for p in transport.posted] == [("t", 4), ("zoom", 5)], transport.posted
bridge.close()
"""
RANK_CONTRACT = """
arrays:
  t: {dtype: float64, shape: [8, 8], block: [8, 8]}
  zoom: {of: t, select: [{start: 2, stop: 6}, {start: 2, stop: 6}], cadence: {never: true}}
cadence: {every: 2}
monitors: [{array: t, reductions: [max, mean]}]
triggers: [{name: hot, when: "max(t) > 5 and step >= 2", action: {cadence: {every: 1}, arrays: [zoom]}}]
"""


@pytest.mark.parametrize("statement", ["import doreisa", "from doreisa import Bridge", "rank-start"])
def test_rank_never_loads_the_contract_models(statement: str, tmp_path: Path) -> None:
    # Issue #17: pydantic models and YAML were most of a rank's import time and memory; the node actor
    # compiles the contract into the plan a rank runs, and Bridge.contract builds the models only if read.
    if statement == "rank-start":
        from doreisa.contract import parse_contract
        from doreisa.runtime.rank.inprocess import InProcessTransport

        welcome = InProcessTransport(parse_contract(RANK_CONTRACT)).welcome
        (tmp_path / "welcome").write_bytes(msgspec.msgpack.encode(welcome))
        statement = f"sys.argv = ['', {str(tmp_path / 'welcome')!r}]; exec({RANK_START!r}, {{}})"
    assert _heavy_modules_after(statement, (*CONTRACT_LOADING, *RANK_FORBIDDEN)) == []


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, at any depth (lazy imports inside functions too)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


#: What reads and validates a contract file: the rank side and the plan it runs never import it, even lazily
#: (``Bridge.contract`` goes through ``doreisa.contract``, which loads its models on first use).
LOADING = ("pydantic", "yaml")
#: What each part of the package must never import (a prefix matches the module and everything below it).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "errors.py": ("doreisa.contract", "doreisa.analytics", "doreisa.runtime", "doreisa.plugins"),
    "plugins": (*HEAVY, "doreisa.contract", "doreisa.analytics", "doreisa.runtime", "doreisa.cli"),
    "contract": (*HEAVY, "doreisa.analytics", "doreisa.runtime", "doreisa.cli", "doreisa.testing"),
    "analytics": ("ray", "mpi4py", "doreisa.runtime", "doreisa.cli", "doreisa.testing"),
    # pure logic both sides share: the rank side imports it, so it imports neither side
    "runtime/protocol.py": (*HEAVY, "doreisa.analytics", "doreisa.runtime.rank", "doreisa.runtime.cluster"),
    "runtime/wire.py": (*HEAVY, "doreisa.analytics", "doreisa.runtime.rank", "doreisa.runtime.cluster"),
    "runtime/cadence.py": (*HEAVY, "doreisa.analytics", "doreisa.runtime.rank", "doreisa.runtime.cluster"),
    "runtime/triggers.py": (*HEAVY, "doreisa.analytics", "doreisa.runtime.rank", "doreisa.runtime.cluster"),
    "runtime/layout.py": (*HEAVY, "doreisa.analytics", "doreisa.runtime.rank", "doreisa.runtime.cluster"),
    "runtime/ring.py": (*HEAVY, "doreisa.analytics", "doreisa.runtime.rank", "doreisa.runtime.cluster"),
    "runtime/store.py": (*HEAVY, "doreisa.analytics", "doreisa.runtime.rank", "doreisa.runtime.cluster"),
    "runtime/plan.py": (*HEAVY, *LOADING, "doreisa.analytics", "doreisa.runtime.rank", "doreisa.runtime.cluster"),
    "runtime/rank": (*RANK_FORBIDDEN, *LOADING),
    "runtime/scheduling": ("mpi4py", "doreisa.runtime.rank", "doreisa.runtime.cluster", "doreisa.cli"),
    "runtime/cluster": ("mpi4py", "doreisa.runtime.rank", "doreisa.cli", "doreisa.testing"),
    # reads a finished run's folder: no Ray, no MPI, nothing of the run's machinery but its summary table
    "report": ("ray", "mpi4py", "doreisa.runtime.rank", "doreisa.runtime.scheduling", "doreisa.cli", "doreisa.testing"),
    # builds the C library: a compiler and this Python's configuration, nothing of the run
    "native": (*HEAVY, "doreisa.contract", "doreisa.analytics", "doreisa.runtime", "doreisa.cli"),
}


def _checked_modules() -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for part in FORBIDDEN:
        paths = [PACKAGE / part] if part.endswith(".py") else _modules_under(part)
        out += [(part, path) for path in paths if path.exists()]
    return out


@pytest.mark.parametrize(("part", "path"), [pytest.param(*c, id=_module(c[1])) for c in _checked_modules()])
def test_module_imports_stay_in_their_layer(part: str, path: Path) -> None:
    banned = FORBIDDEN[part]
    crossing = sorted({m for m in _imports(path) if any(m == b or m.startswith(b + ".") for b in banned)})
    assert not crossing, f"{_module(path)} ({part}) imports {crossing}"


def test_every_runtime_module_is_checked() -> None:
    """A new module in runtime/ must be placed in one side (or the shared logic) of FORBIDDEN."""
    checked = {path for _, path in _checked_modules()}
    loose = [_module(p) for p in _modules_under("runtime") if p not in checked and p.parent.name == "runtime"]
    assert sorted(loose) == ["doreisa.runtime", "doreisa.runtime._names"]

"""``doreisa run``: start (or join) Ray, start the analytics, launch the simulation, report.

Outputs in ``--output DIR``: ``results.csv``, ``arrays/`` (non-scalar results as ``.npy``),
``summary.json``, ``contract.yaml`` (the contract used).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from doreisa.contract import load_contract
from doreisa.errors import AnalyticsError, DoreisaError


def _prepare_ray_env() -> None:
    # Must happen before ray is imported: otherwise Ray rewrites 127.0.0.1 to a routable
    # address that local processes may not reach (see shared/RELIABILITY.md, the loopback trap).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def import_analytics(names: list[str]) -> None:
    """Import modules (``pkg.mod``) or files (``path/to/file.py``) that register analytics."""
    for name in names:
        try:
            if name.endswith(".py"):
                path = Path(name).resolve()
                spec = importlib.util.spec_from_file_location(path.stem, path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot load {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(name)
        except DoreisaError:
            raise
        except Exception as exc:
            raise AnalyticsError(f"--analytics {name}: import failed: {type(exc).__name__}: {exc}") from exc


def find_mpiexec(explicit: str | None) -> str:
    """The MPI launcher: ``explicit`` (may hold options: "mpirun --oversubscribe", "srun"), else the one
    beside this Python (the mpich wheel), else PATH."""
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if found is None:
        raise DoreisaError("no mpiexec found: install MPI (pip install mpich) or pass --mpiexec")
    return found


class Progress:
    """One status line, about once a second, on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def __call__(self, session: Any) -> None:
        now = time.monotonic()
        if self.quiet or now - self.last < (1.0 if self.tty else 5.0):
            return
        self.last = now
        s = session.state
        copied = sum(c.published for c in s.closed.values())
        line = (
            f"[doreisa {now - session.started_at:6.1f}s] ranks {len(s.hello)} up/{len(s.closed)} done | "
            f"last step analysed {s.last_step} | blocks received {s.blocks}"
            f"{f' (closed ranks copied {copied})' if s.closed else ''} | analytic calls {session.driver.counts.calls}"
            f" failed {session.driver.counts.failed} | incomplete steps {s.partial} | store {_store_use()}"
        )
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)


def _store_use() -> str:
    import ray

    total = ray.cluster_resources().get("object_store_memory", 0)
    free = ray.available_resources().get("object_store_memory", 0)
    return f"{(total - free) / 2**20:.0f}/{total / 2**20:.0f} MiB"


def run(
    contract_path: str,
    *,
    nranks: int,
    output: str | None,
    command: list[str],
    address: str | None = None,
    run_dir: str | None = None,
    analytics: list[str] | None = None,
    mpiexec: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run a whole coupled job; returns the summary (also written to ``OUTPUT/summary.json``).

    Raises
    ------
    DoreisaError
        For a bad contract, analytics that cannot be bound, or ranks that never connect.
    """
    contract = load_contract(contract_path)
    text = Path(contract_path).read_text()
    import_analytics(analytics or [])
    where = output or contract.outputs.directory
    if where is None:
        raise DoreisaError("no output folder: pass --output DIR or set outputs.directory in the contract")
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    (out / "contract.yaml").write_text(text)
    _prepare_ray_env()
    from doreisa.analytics import bind_analytics, default_registry
    from doreisa.runtime.cluster.session import Session, start_ray

    bind_analytics(contract, default_registry)  # fail before Ray starts
    started = time.monotonic()
    temp_dir = None if address else tempfile.mkdtemp(prefix="dray-", dir="/tmp")
    start_ray(address, temp_dir=temp_dir)
    import ray

    session = Session(contract, output=out, run_dir=run_dir)
    proc: subprocess.Popen[bytes] | None = None
    error: str | None = None
    try:
        session.start()
        if command:
            argv = [*shlex.split(find_mpiexec(mpiexec)), "-n", str(nranks), *command]
            proc = subprocess.Popen(argv, env={**os.environ, **session.env})
        else:
            print(
                f"doreisa: waiting for {nranks} ranks; start them with DOREISA_RUN_DIR={session.run_dir}",
                file=sys.stderr,
            )
        alive = (lambda: proc.poll() is None) if proc is not None else (lambda: True)
        session.serve(nranks, alive=alive, tick=Progress(quiet))
    except DoreisaError as exc:
        error = str(exc)
    finally:
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        session.stop()
        summary = _summary(session, proc, error, time.monotonic() - started)
        ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not quiet:
        print(file=sys.stderr)
        print(format_summary(summary), file=sys.stderr)
    return summary


def _summary(session: Any, proc: subprocess.Popen[bytes] | None, error: str | None, wall: float) -> dict[str, Any]:
    import msgspec

    state = session.state
    closed = list(state.closed.values())
    ranks = {str(r): msgspec.to_builtins(stats) for r, stats in sorted(state.closed.items())}
    failures = [f.as_dict() for f in session.driver.failures]
    exit_code = None if proc is None else proc.returncode
    ok = not (failures or state.lost_steps or state.lost_ranks or error or state.errors or exit_code not in (0, None))
    return {
        "ok": ok,
        "error": error,
        "simulation_exit_code": exit_code,
        "wall_s": round(wall, 3),
        "ranks": len(state.hello),
        "ranks_lost": sorted(state.lost_ranks),
        "steps_analysed": dict(session.driver.counts.steps),
        "blocks_published": sum(s.published for s in closed),
        "bytes_copied": sum(s.bytes_copied for s in closed),
        "steps_skipped": sum(s.skipped for s in closed),
        "steps_dropped": sum(s.dropped for s in closed),
        "skipped": sorted({tuple(x) for s in closed for x in s.skipped_steps}),
        "analytic_calls": session.driver.counts.calls,
        "graphs": {"cut": session.plans.misses, "reused": session.plans.hits},
        "results_recorded": session.results.count,
        "array_results_not_saved": session.results.unsaved,
        "analytic_failures": failures,
        "steps_lost": msgspec.to_builtins(state.lost_steps),
        "cadence_changes": [r for r in session.provenance.records if r["kind"] == "change"],
        "errors": msgspec.to_builtins(state.errors),
        "per_rank": ranks,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The end-of-run table."""
    rows = [
        ("status", "ok" if summary["ok"] else "FAILED"),
        ("wall time", f"{summary['wall_s']:.1f} s"),
        ("ranks", f"{summary['ranks']} (lost: {summary['ranks_lost'] or 'none'})"),
        ("blocks copied", f"{summary['blocks_published']} ({summary['bytes_copied'] / 2**20:.1f} MiB)"),
        ("steps analysed", ", ".join(f"{k}: {v}" for k, v in summary["steps_analysed"].items()) or "none"),
        ("steps skipped (backpressure)", str(summary["steps_skipped"])),
        ("steps dropped (analytics unavailable)", str(summary["steps_dropped"])),
        ("steps lost (incomplete)", str(len(summary["steps_lost"]))),
        ("analytic calls", f"{summary['analytic_calls']} ({len(summary['analytic_failures'])} failed)"),
        ("cadence changes / steering", str(len(summary["cadence_changes"]))),
        ("task graphs cut / reused", f"{summary['graphs']['cut']} / {summary['graphs']['reused']}"),
    ]
    if summary["error"]:
        rows.append(("error", summary["error"]))
    width = max(len(k) for k, _ in rows)
    lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
    for change in summary["cadence_changes"][:10]:
        moved = ", ".join(f"{c['array']}: {_cadence(c['old'])} -> {_cadence(c['new'])}" for c in change["changes"])
        values = ", ".join(f"{k} = {v:g}" for k, v in change["values"].items())
        steering = f" steering {change['steering']}" if change["steering"] else ""
        lines.append(
            f"  * step {change['step']} (decided at {change['decided_at']}, {change['source']}): "
            f"{moved or 'no cadence change'}{f' [{values}]' if values else ''}{steering}"
        )
    for failure in summary["analytic_failures"][:10]:
        lines.append(f"  ! {failure['analytic']} at step {failure['step']}: {failure['error']}")
    return "doreisa run summary\n" + "\n".join(lines)


def _cadence(c: dict[str, Any]) -> str:
    return f"every {c['every']} steps" if "every" in c else f"every {c['every_time']:g} time units"


def run_from_cli(args: argparse.Namespace) -> int:
    """``doreisa run`` entry point; exit status 0 only if nothing failed."""
    command = list(args.command)
    if args.np < 1:
        raise DoreisaError(f"--np must be at least 1, got {args.np}")
    summary = run(
        args.contract,
        nranks=args.np,
        output=args.output,
        command=command,
        address=args.address,
        run_dir=args.run_dir,
        analytics=args.analytics,
        mpiexec=args.mpiexec,
        quiet=args.quiet,
    )
    return 0 if summary["ok"] else 1

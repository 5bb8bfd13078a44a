"""``doreisa run``: start (or join) Ray, start the analytics, launch the simulation, report.

Outputs in ``--output DIR``: ``results.csv``, ``arrays/`` (non-scalar results as ``.npy``),
``summary.json``, ``contract.yaml`` (the contract used).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from doreisa import __version__, logs
from doreisa.analytics.loading import import_analytics
from doreisa.contract import Contract, load_contract
from doreisa.errors import DoreisaError, StallError
from doreisa.runtime.cluster import prepare_ray_env, private_ray_token
from doreisa.runtime.cluster.cost import factors
from doreisa.runtime.cluster.preflight import check_launch, find_mpiexec, simulation_env
from doreisa.runtime.cluster.progress import Progress
from doreisa.runtime.cluster.summary import format_summary, run_summary

#: Seconds the simulation has to end after the analytics have (then it is killed).
SIMULATION_GRACE = 30

log = logging.getLogger("doreisa.run")


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

    Once Ray has started, the summary is written and the run's actors, run folder and Ray's
    temporary folder are removed whatever happens: an actor that dies, ranks that never come,
    Ctrl-C or SIGTERM (re-raised as :class:`Interrupted` once the summary is written).

    Raises
    ------
    DoreisaError
        For a bad contract or analytics that cannot be bound (before anything starts).
    """
    contract = load_contract(contract_path)
    text = Path(contract_path).read_text()
    where = output or contract.outputs.directory
    if where is None:
        raise DoreisaError("no output folder: pass --output DIR or set outputs.directory in the contract")
    factors()  # a bad $DOREISA_WATTS_PER_CORE or $DOREISA_CARBON_G_PER_KWH is an error now, not at the end
    if command:  # before Ray starts and before anything is written: a missing MPI is found in a second
        mpiexec = check_launch(command, mpiexec, simulation_env(os.environ))
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    (out / "contract.yaml").write_text(text)
    copy = logs.copy_to(out / "doreisa.log")  # what this process logs, from INFO up, whatever the terminal shows
    log.info("doreisa %s: %s on %d ranks, output in %s", __version__, contract_path, nranks, out)
    try:
        summary = _run(contract, out, address, run_dir, analytics, _Launch(nranks, command, mpiexec, quiet))
    finally:
        logs.stop_copy(copy)
    return summary


def _run(
    contract: Contract,
    out: Path,
    address: str | None,
    run_dir: str | None,
    analytics: list[str] | None,
    launch: _Launch,
) -> dict[str, Any]:
    started = time.monotonic()
    temp_dir = None if address else tempfile.mkdtemp(prefix="dray-", dir="/tmp")  # mode 0700
    prepare_ray_env()  # before ray is imported (the analytics' modules may import it), as is the run's own token
    if temp_dir is not None:
        private_ray_token(Path(temp_dir))
    try:
        files = import_analytics(analytics or [])
        from doreisa.runtime.cluster.session import Session

        session = Session(contract, output=out, run_dir=run_dir)  # binds the analytics: fails before Ray starts
    except BaseException:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    from doreisa.runtime.cluster.setup import ship_by_value, start_ray

    ship_by_value(files)

    default_term = signal.getsignal(signal.SIGTERM)
    try:
        start_ray(address, temp_dir=temp_dir)
        _on_sigterm(_raise_interrupted)  # after ray.init, which installs its own (a bare sys.exit)
        launch.serve(session)
    except StallError as exc:  # ranks stuck in a collective never finish: end the simulation at once
        launch.error, launch.end_now = str(exc), True
    except DoreisaError as exc:
        launch.error = str(exc)
    except SystemExit as exc:  # a handler of someone else's (Ray's, before ours is set) asked to exit
        launch.error, launch.end_now = f"exit requested ({exc.code})", True
        raise
    except KeyboardInterrupt as exc:
        launch.error, launch.end_now, launch.interrupted = f"interrupted ({_signal_name(exc)})", True, exc
    except Exception as exc:  # Ray could not start, or a bug: in the summary, not only as a traceback
        log.exception("the run failed")
        launch.error, launch.end_now = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}", True
    finally:
        _on_sigterm(default_term)  # a second SIGTERM ends the cleanup: the user insists
        problems = session.stop()  # first: with the node actors gone, ranks still running detach and finish
        # then Ray, before the simulation's grace: a driver whose GCS is gone is ended by Ray within a minute
        problems += _shutdown_ray(temp_dir)
        launch.end_simulation()
        summary = run_summary(session, launch.proc, launch.error, problems, time.monotonic() - started, started)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = format_summary(summary)
    log.info("%s", table)
    if not launch.quiet:
        print(file=sys.stderr)
        print(table, file=sys.stderr)
    if launch.interrupted is not None:
        raise launch.interrupted
    return summary


class Interrupted(KeyboardInterrupt):
    """The run was ended by a signal (``signum``: SIGINT for Ctrl-C, SIGTERM from a batch system)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def _signal_name(exc: KeyboardInterrupt) -> str:
    return "Ctrl-C" if not isinstance(exc, Interrupted) or exc.signum == signal.SIGINT else str(exc)


def _on_sigterm(handler: Any) -> Any:
    """Install ``handler`` for SIGTERM (in the main thread only: elsewhere Python refuses); the previous one."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler if handler is not None else signal.SIG_DFL)


class _Launch:
    """The simulation's side of a run: its process, and how the run ended."""

    def __init__(self, nranks: int, command: list[str], mpiexec: str | None, quiet: bool) -> None:
        self.nranks, self.command, self.mpiexec, self.quiet = nranks, command, mpiexec, quiet
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        self.end_now = False  # end the simulation at once (Ctrl-C, a stall), not after a grace
        self.interrupted: KeyboardInterrupt | None = None  # re-raised once the summary is written
        self._echo: threading.Thread | None = None

    def serve(self, session: Any) -> None:
        """Start the analytics, launch the simulation (if a command was given), analyse until it ends."""
        session.start()
        with Progress(self.quiet) as progress:
            if self.command:
                self.proc = self._launch(session, progress)
            else:
                log.warning("waiting for %d ranks; start them with DOREISA_RUN_DIR=%s", self.nranks, session.run_dir)
            proc = self.proc
            alive = (lambda: proc.poll() is None) if proc is not None else (lambda: True)
            session.serve(self.nranks, alive=alive, tick=progress)

    def _launch(self, session: Any, progress: Progress) -> subprocess.Popen[bytes]:
        """The simulation under mpiexec. Under a live status line its output is read line by line and
        printed above it (unbuffered, so that lines come as they are written: Python's print() then
        writes a line's text and its newline separately, so lines printed by several ranks at the same
        moment may merge, as under any mpiexec); else it writes as it likes."""
        argv = [*shlex.split(find_mpiexec(self.mpiexec)), "-n", str(self.nranks), *self.command]
        env = simulation_env({**os.environ, **session.env})
        if not progress.live_terminal:
            return subprocess.Popen(argv, env=env)
        proc = subprocess.Popen(
            argv, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._echo = threading.Thread(target=_echo_lines, args=(proc, progress), name="doreisa-echo", daemon=True)
        self._echo.start()
        return proc

    def end_simulation(self) -> None:
        """Let the simulation finish (at most ``SIMULATION_GRACE`` s), or end it at once (Ctrl-C, a stall)."""
        if self.proc is None:
            return
        try:
            if self.end_now:
                self.proc.terminate()
            self.proc.wait(timeout=SIMULATION_GRACE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._echo is not None:
            self._echo.join(5)  # the last lines of its output


def _echo_lines(proc: subprocess.Popen[bytes], progress: Progress) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        progress.echo(raw.decode(errors="replace").rstrip("\n"))


def _shutdown_ray(temp_dir: str | None) -> list[str]:
    """Disconnect from Ray (and stop a private one), remove its temporary folder; what failed, one line each."""
    import ray

    try:
        ray.shutdown()
    except Exception as exc:  # the summary is still to be written
        log.error("Ray did not shut down cleanly: %s", exc)
        return [f"Ray did not shut down cleanly: {type(exc).__name__}: {exc}"]
    finally:
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return []


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

"""The ``doreisa`` command line: ``validate``, ``schema``, ``run`` and ``report``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from doreisa import __version__, logs
from doreisa.contract import load_contract
from doreisa.contract.schema import contract_json_schema_text
from doreisa.errors import DoreisaError


def _validate(args: argparse.Namespace) -> int:
    if args.analytics:  # the functions the contracts name are checked against what these register
        from doreisa.analytics.loading import import_analytics

        import_analytics(args.analytics)
    failed = 0
    for path in args.files:
        try:
            contract = load_contract(path)
            if args.analytics:
                from doreisa.analytics import bind_analytics, default_registry

                bind_analytics(contract, default_registry)
        except DoreisaError as exc:
            failed += 1
            print(f"{path}: {exc}" if not str(exc).startswith(str(path)) else exc, file=sys.stderr)
            continue
        if not args.quiet:
            arrays = ", ".join(contract.arrays)
            unchecked = "" if args.analytics or not contract.analytics else "; functions not checked: see --analytics"
            print(
                f"{path}: ok ({len(contract.arrays)} arrays: {arrays}; {len(contract.analytics)} analytics; "
                f"{len(contract.triggers)} triggers{unchecked})"
            )
    return 1 if failed else 0


def _schema(args: argparse.Namespace) -> int:
    sys.stdout.write(contract_json_schema_text())
    return 0


def _run(args: argparse.Namespace) -> int:
    from doreisa.runtime.cluster.launcher import run_from_cli  # heavy: Ray and Dask only for `run`

    code = run_from_cli(args)
    if args.report:  # a failed run's page is the one most worth reading
        _page_of(args.output or load_contract(args.contract).outputs.directory)
    return code


def _page_of(output: str | None) -> None:
    """``doreisa run --report``: the page of the run just ended; a page that cannot be drawn is said, not fatal."""
    from doreisa.report import write_report

    try:
        print(f"report: {write_report(output or '.')}", file=sys.stderr)
    except DoreisaError as exc:
        print(f"doreisa run --report: no page written: {exc}", file=sys.stderr)


def _report(args: argparse.Namespace) -> int:
    from doreisa.report import report_from_cli  # pandas and matplotlib only when the page is drawn

    return report_from_cli(args.run_dir, html=args.html, page=not args.no_html)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doreisa", description="Contract-driven in situ analytics on Ray and Dask.")
    parser.add_argument("--version", action="version", version=f"doreisa {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more: -v for INFO, -vv for DEBUG (default WARNING)"
    )
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        help=f"DEBUG, INFO, WARNING, ERROR or CRITICAL (default: ${logs.ENV_LEVEL}, else WARNING)",
    )
    sub = parser.add_subparsers(dest="subcommand")

    p = sub.add_parser("validate", help="check contract files; exit 1 if any is invalid")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.add_argument(
        "--analytics",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import this module or .py file, then check that the contract's analytics are registered and fit "
        "their functions (repeatable; without it, only the built-ins and 'module:function' are known to run)",
    )
    p.set_defaults(func=_validate)

    p = sub.add_parser("schema", help="print the contract's JSON Schema")
    p.set_defaults(func=_schema)

    _add_run(sub)
    _add_report(sub)
    _add_native(sub)
    return parser


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the analytics of CONTRACT and, after --, the simulation under mpiexec",
        usage="doreisa run CONTRACT [--output DIR] [--np N] [options] [-- COMMAND ...]",
        epilog="Without '-- COMMAND', waits for ranks started elsewhere with DOREISA_RUN_DIR set to --run-dir.",
    )
    p.add_argument("contract", metavar="CONTRACT")
    p.add_argument("--np", type=int, default=1, help="number of MPI ranks (default 1)")
    p.add_argument("--output", metavar="DIR", help="where results.csv and summary.json go (default: outputs.directory)")
    p.add_argument("--address", metavar="RAY_ADDRESS", help="join this Ray cluster instead of starting one")
    p.add_argument("--run-dir", metavar="DIR", help="rendezvous folder of the ranks (default: a new one in /tmp)")
    p.add_argument(
        "--analytics",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import this module or .py file to register analytics (repeatable)",
    )
    p.add_argument("--mpiexec", default=None, help="MPI launcher (default: the one beside this Python, else PATH)")
    p.add_argument("--quiet", action="store_true", help="no live progress line")
    p.add_argument("--report", action="store_true", help="at the end, write OUTPUT/report.html (see doreisa report)")
    p.set_defaults(func=_run)


def _add_report(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="print the summary of a finished run and write RUN_DIR/report.html (figures need doreisa[plot])",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the folder `doreisa run --output` wrote")
    page = p.add_mutually_exclusive_group()
    page.add_argument("--html", metavar="PATH", help="write the page here (default: RUN_DIR/report.html)")
    page.add_argument("--no-html", action="store_true", help="print the summary only")
    p.set_defaults(func=_report)


def _add_native(sub: Any) -> None:
    p = sub.add_parser(
        "native",
        help="build libdoreisa (the C, C++ and Fortran API) and print its compile and link flags",
        description="Without flags: build the library if it is missing or stale, print its path. "
        "With flags: print them on one line, like python3-config (building first if needed).",
        epilog="Makefile: CFLAGS += $(shell doreisa native --cflags); LDLIBS += $(shell doreisa native --libs). "
        "See docs/native.md.",
    )
    p.add_argument("--cflags", action="store_true", help="compile flags (-I of doreisa.h and doreisa.hpp)")
    p.add_argument("--libs", action="store_true", help="link flags (-L, rpath, -ldoreisa)")
    p.add_argument("--fortran", action="store_true", help="path of the Fortran module's source, doreisa.f90")
    p.add_argument("--pkgconfig", action="store_true", help="the folder holding doreisa.pc (for PKG_CONFIG_PATH)")
    p.add_argument(
        "--dir", type=Path, help="where the library is built (default: $DOREISA_NATIVE_DIR, else PREFIX/lib/doreisa)"
    )
    p.add_argument("--cc", help="MPI C compiler (default: $MPICC, the mpicc beside this Python, else PATH)")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.set_defaults(func=_native)


def _native(args: argparse.Namespace) -> int:
    from doreisa import native

    path = native.build(args.dir, args.cc, force=args.force)
    words: list[str] = []
    if args.cflags:
        words += native.cflags()
    if args.libs:
        words += native.libs(args.dir)
    if args.fortran:
        words.append(str(native.FORTRAN))
    if args.pkgconfig:
        words.append(str(path.parent / "pkgconfig"))
    print(" ".join(words) if words else path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``doreisa`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:  # everything after -- is the simulation's command line, untouched
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1 :]
    parser = _parser()
    args = parser.parse_args(argv)
    if args.subcommand is None:  # `doreisa` alone: what it can do
        parser.print_help()
        return 0
    try:
        logs.configure(logs.level_of(args.log_level, args.verbose))
    except ValueError as exc:
        parser.error(str(exc))
    args.command = command
    try:
        return int(args.func(args))
    except DoreisaError as exc:
        print(f"doreisa: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM during `doreisa run`: the shell's 128 + signal number
        print("doreisa: interrupted", file=sys.stderr)
        return 128 + int(getattr(exc, "signum", 2))


if __name__ == "__main__":
    sys.exit(main())

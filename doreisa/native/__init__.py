"""The C, C++ and Fortran API: where its files are, and building ``libdoreisa`` on this machine.

The library is compiled here, from the installed package, with the MPI compiler wrapper the
simulation uses (``mpicc``) and the flags of the Python doreisa runs in, because both must be
the ones the simulation's process loads: one MPI library (shared with mpi4py in the embedded
interpreter) and this interpreter's ``libpython``. ``doreisa native --cflags --libs`` prints
what a Makefile needs, building the library first if it is missing or stale.

Files: ``include/doreisa.h`` (C), ``include/doreisa.hpp`` (C++, header only),
``fortran/doreisa.f90`` (Fortran module, compiled with the simulation), ``src/doreisa.c``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from doreisa import __version__
from doreisa.errors import DoreisaError

HERE = Path(__file__).parent
INCLUDE = HERE / "include"
SOURCE = HERE / "src" / "doreisa.c"
FORTRAN = HERE / "fortran" / "doreisa.f90"
LIBRARY = "libdoreisa.so"
ENV_DIR = "DOREISA_NATIVE_DIR"


def default_dir() -> Path:
    """Where the library is built: ``$DOREISA_NATIVE_DIR``, else ``lib/doreisa`` of this Python's prefix."""
    return Path(os.environ.get(ENV_DIR) or Path(sys.prefix) / "lib" / "doreisa")


def find_cc(explicit: str | None = None) -> str:
    """The MPI C compiler wrapper: ``explicit``, ``$MPICC``, the one beside this Python (the mpich wheel), PATH."""
    chosen = explicit or os.environ.get("MPICC")
    if chosen:
        if shutil.which(shlex.split(chosen)[0]) is None:
            raise DoreisaError(f"C compiler {chosen!r} not found (not a file, not on PATH)")
        return chosen
    beside = Path(sys.executable).parent / "mpicc"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpicc")
    if found is None:
        raise DoreisaError(
            "no mpicc found (beside this Python or on PATH): install doreisa[mpich], load your site's MPI "
            "module, or pass --cc / set $MPICC"
        )
    return found


def python_flags() -> tuple[list[str], list[str]]:
    """Compile and link flags that embed this interpreter (what ``python3-config --embed`` prints)."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise DoreisaError(
            f"{sys.executable} has no shared libpython: the C API embeds Python and needs one. Use a Python "
            "built with --enable-shared (distribution and conda Pythons are; pyenv: "
            "PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install ...)"
        )
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    version = sysconfig.get_config_var("LDVERSION") or sysconfig.get_python_version()
    cflags = [f"-I{sysconfig.get_paths()['include']}"]
    extra = shlex.split(str(sysconfig.get_config_var("LIBS") or "")) + shlex.split(
        str(sysconfig.get_config_var("SYSLIBS") or "")
    )
    return cflags, [f"-L{libdir}", f"-Wl,-rpath,{libdir}", f"-lpython{version}", *extra]


def _fingerprint(cc: str) -> str:
    text = "\n".join([SOURCE.read_text(), (INCLUDE / "doreisa.h").read_text(), cc, sys.executable, __version__])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def library(directory: Path | None = None) -> Path:
    return (directory or default_dir()) / LIBRARY


def build(directory: Path | None = None, cc: str | None = None, *, force: bool = False) -> Path:
    """Compile ``libdoreisa.so`` into ``directory`` (if missing, stale or ``force``); its path.

    Also writes ``pkgconfig/doreisa.pc`` there, for ``pkg-config --cflags --libs doreisa``.

    Raises
    ------
    DoreisaError
        No compiler, no shared libpython, a folder that cannot be written, or a failed compile
        (with the compiler's output).
    """
    directory = directory or default_dir()
    compiler = find_cc(cc)
    stamp = directory / "build.json"
    print_ = _fingerprint(compiler)
    target = directory / LIBRARY
    if not force and target.exists() and stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == print_:
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DoreisaError(f"cannot create {directory}: {exc}; pass --dir or set ${ENV_DIR}") from exc
    py_cflags, py_libs = python_flags()
    scratch = directory / f".{LIBRARY}.{os.getpid()}"
    command = [
        *shlex.split(compiler),
        "-shared", "-fPIC", "-O2", "-std=gnu11", "-Wall",
        f"-I{INCLUDE}", *py_cflags, f'-DDOREISA_DEFAULT_PYTHON="{sys.executable}"',
        str(SOURCE), "-o", str(scratch), *py_libs,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        scratch.unlink(missing_ok=True)
        raise DoreisaError(f"building {target} failed:\n$ {shlex.join(command)}\n{done.stdout}{done.stderr}")
    scratch.replace(target)  # atomic: ranks of a running job keep the file they loaded
    stamp.write_text(json.dumps({"fingerprint": print_, "cc": compiler, "python": sys.executable}))
    pc = directory / "pkgconfig" / "doreisa.pc"
    pc.parent.mkdir(exist_ok=True)
    pc.write_text(
        f"Name: doreisa\nDescription: C API of the doreisa bridge\nVersion: {__version__}\n"
        f"Cflags: {' '.join(cflags())}\nLibs: {' '.join(libs(directory))}\n"
    )
    return target


def cflags() -> list[str]:
    return [f"-I{INCLUDE}"]


def libs(directory: Path | None = None) -> list[str]:
    where = directory or default_dir()
    return [f"-L{where}", f"-Wl,-rpath,{where}", "-ldoreisa"]

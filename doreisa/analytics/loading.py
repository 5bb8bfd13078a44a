"""Importing the modules and files that register a run's analytics (``--analytics``)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from doreisa.errors import AnalyticsError, DoreisaError


def import_analytics(names: list[str]) -> list[ModuleType]:
    """Import modules (``pkg.mod``) or files (``path/to/file.py``) that register analytics; return the
    modules loaded from files.

    A file already imported (by an earlier call in this process) is not run again: its
    registrations would be duplicates. A file is not importable where Ray runs the analytics'
    tasks (other processes, other nodes), so a run ships the functions it defines by value
    (:func:`doreisa.runtime.cluster.setup.ship_by_value`); a module named ``pkg.mod`` must be
    installed on every node.
    """
    files: list[ModuleType] = []
    for name in names:
        try:
            if name.endswith(".py"):
                path = Path(name).resolve()
                loaded = sys.modules.get(path.stem)
                if loaded is not None and getattr(loaded, "__file__", None) == str(path):
                    files.append(loaded)
                    continue
                spec = importlib.util.spec_from_file_location(path.stem, path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot load {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)
                files.append(module)
            else:
                importlib.import_module(name)
        except DoreisaError:
            raise
        except Exception as exc:
            raise AnalyticsError(f"--analytics {name}: import failed: {type(exc).__name__}: {exc}") from exc
    return files

"""Importing the modules and files that register a run's analytics (``--analytics``)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from doreisa.errors import AnalyticsError, DoreisaError


def import_analytics(names: list[str]) -> None:
    """Import modules (``pkg.mod``) or files (``path/to/file.py``) that register analytics.

    A file already imported (by an earlier call in this process) is not run again: its
    registrations would be duplicates.
    """
    for name in names:
        try:
            if name.endswith(".py"):
                path = Path(name).resolve()
                if getattr(sys.modules.get(path.stem), "__file__", None) == str(path):
                    continue
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

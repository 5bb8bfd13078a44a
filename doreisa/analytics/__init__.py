"""The analytics layer: registration and binding. May import dask; never ray or mpi4py."""

# Imported for its side effect: it registers the built-in analytics on default_registry.
from doreisa.analytics import builtins as _builtins  # noqa: F401  # pyright: ignore[reportUnusedImport]
from doreisa.analytics import snapshots as _snapshots  # noqa: F401  # pyright: ignore[reportUnusedImport]
from doreisa.analytics.binding import BoundAnalytic, bind_analytics, windows_needed
from doreisa.analytics.feedback import Feedback
from doreisa.analytics.registry import Analytic, Registry, analytic, default_registry

__all__ = [
    "Analytic",
    "BoundAnalytic",
    "Feedback",
    "Registry",
    "analytic",
    "bind_analytics",
    "default_registry",
    "windows_needed",
]

"""doreisa's logging: one ``doreisa`` logger tree, set up by the command line, never on import.

Library code only creates loggers (``logging.getLogger("doreisa.<part>")``); an application
that uses doreisa as a library configures logging as it likes. ``doreisa`` (the command)
calls :func:`configure`: timestamps and levels on stderr, at the level of ``--log-level``,
``-v`` / ``-vv``, ``$DOREISA_LOG_LEVEL``, else WARNING; ``doreisa run`` also writes every
message from INFO up to ``OUTPUT/doreisa.log`` (:func:`copy_to`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import IO

#: The environment variable that sets the level when the command line does not.
ENV_LEVEL = "DOREISA_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
ROOT = "doreisa"


def level_of(level: str | None, verbose: int = 0) -> int:
    """The level to log at: ``level`` (a name), else ``verbose`` (1: INFO, 2: DEBUG), else the environment.

    Raises
    ------
    ValueError
        For a name that is not a level, listing the valid ones.
    """
    name = level or {0: None, 1: "INFO"}.get(verbose, "DEBUG" if verbose else None) or os.environ.get(ENV_LEVEL)
    if name is None:
        return logging.WARNING
    if name.upper() not in LEVELS:
        source = "--log-level" if level else f"${ENV_LEVEL}"
        raise ValueError(f"{source}: {name!r} is not a log level; use one of {', '.join(LEVELS)}")
    return logging.getLevelNamesMapping()[name.upper()]


def configure(level: int, stream: IO[str] | None = None) -> logging.Handler:
    """Log doreisa's messages of ``level`` and above to ``stream`` (stderr), with time and level; returns the handler.

    Called again, it replaces the handler it installed before.
    """
    logger = logging.getLogger(ROOT)
    for old in [h for h in logger.handlers if isinstance(h, _Terminal)]:
        logger.removeHandler(old)
    handler = _Terminal(stream)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    handler.setLevel(level)
    logger.addHandler(handler)
    logger.propagate = False  # not twice through the root logger
    _follow_handlers(logger)
    return handler


def copy_to(path: Path) -> logging.Handler:
    """Also write doreisa's messages from INFO up to ``path``, whatever the terminal shows (see :func:`stop_copy`)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT, "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger(ROOT)
    logger.addHandler(handler)
    _follow_handlers(logger)
    return handler


def stop_copy(handler: logging.Handler) -> None:
    """Close the file of :func:`copy_to`."""
    logger = logging.getLogger(ROOT)
    logger.removeHandler(handler)
    handler.close()
    _follow_handlers(logger)


class _Terminal(logging.StreamHandler[IO[str]]):
    """The handler :func:`configure` installs (and replaces). Without a stream of its own it writes to
    whatever ``sys.stderr`` is at the time (a live status line redirects it above itself)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._own: IO[str] | None = stream
        super().__init__(stream or sys.stderr)

    @property
    def stream(self) -> IO[str]:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self._own if self._own is not None else sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        if value is not sys.stderr:
            self._own = value


def _follow_handlers(logger: logging.Logger) -> None:
    """The logger lets through what its most verbose handler shows; each handler filters the rest."""
    if logger.handlers:
        logger.setLevel(min(h.level or logging.DEBUG for h in logger.handlers))

"""The live status of ``doreisa run``: one line that fits the terminal, or plain periodic lines in a log.

On a terminal the line is redrawn in place (rich's ``Live``) and everything else printed
meanwhile goes above it: doreisa's log messages, and the simulation's output, which the run
reads from the simulation's pipes and prints line by line (:meth:`Progress.echo`), so the two
never mix on one line. Anywhere else (a file, CI) a plain status line is printed every
``PLAIN_EVERY`` seconds and the simulation writes to the same stream as it likes.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

#: Seconds between two status lines when the output is not a terminal.
PLAIN_EVERY = 5.0
#: Seconds between two redraws on a terminal.
LIVE_EVERY = 0.5


class Progress:
    """See the module. Use as a context manager around the run; call it once per turn of the run's loop."""

    def __init__(self, quiet: bool, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live_terminal = not quiet and self.stream.isatty()
        self._last = 0.0
        self._live: Any = None
        self._console: Any = None
        self._lock = threading.Lock()  # echo() runs in the thread that reads the simulation's output

    def __enter__(self) -> Progress:
        if self.live_terminal:
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=self.stream, highlight=False, soft_wrap=False)
            # what this process prints (its log messages) goes above the status line too
            self._live = Live(console=self._console, transient=True, redirect_stdout=True, redirect_stderr=True)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def echo(self, line: str) -> None:
        """Print a line of the simulation's output above the status line."""
        with self._lock:
            if self._console is not None:
                self._console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
            else:
                self.stream.write(line + "\n")
                self.stream.flush()

    def __call__(self, session: Any) -> None:
        now = time.monotonic()
        if self.quiet or now - self._last < (LIVE_EVERY if self.live_terminal else PLAIN_EVERY):
            return
        self._last = now
        line = status_line(session, now)
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(line, no_wrap=True, overflow="ellipsis"))
        else:
            print(line, file=self.stream, flush=True)


def status_line(session: Any, now: float) -> str:
    """What the run has done so far, most telling first (a narrow terminal cuts the end)."""
    s, counts = session.state, session.driver.counts
    failed = f" ({counts.failed} failed)" if counts.failed else ""
    lost = f" | {len(s.lost_steps)} steps lost" if s.lost_steps else ""
    step = s.last_step if s.last_step >= 0 else "-"
    return (
        f"doreisa {now - session.started_at:5.0f}s | step {step} | ranks {len(s.hello)} up, {len(s.closed)} "
        f"closed | calls {counts.calls}{failed}{lost} | blocks {s.blocks} | partial steps {s.partial} | "
        f"store {_store_use()}"
    )


def _store_use() -> str:
    import ray

    total = ray.cluster_resources().get("object_store_memory", 0)
    free = ray.available_resources().get("object_store_memory", 0)
    return f"{(total - free) / 2**20:.0f}/{total / 2**20:.0f} MiB"

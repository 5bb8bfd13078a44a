"""What the session has seen of the ranks, and the deadlines that keep a run from waiting forever.

:class:`RunWatch` is checked at every turn of the session's loop: ranks that never connect
(``timeouts.connect``), ranks that never reach a collective the others wait in (a hung rank:
``timeouts.step``), a simulation that exited while ranks had not closed, and, once every rank
has closed, blocks that never come (``timeouts.step``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from doreisa.contract import Timeouts
from doreisa.errors import RuntimeUnavailableError, StallError
from doreisa.runtime.protocol import (
    NodeWarning,
    Publishing,
    RankClosed,
    RankError,
    RankJoined,
    RankLost,
    RankStats,
    StepLost,
    TriggerFailed,
)

log = logging.getLogger("doreisa.session")

#: Seconds between the simulation's exit and counting the ranks that did not close as lost.
EXIT_GRACE = 10.0


@dataclass
class RunState:
    """What the session has seen of the ranks."""

    hello: dict[int, str] = field(default_factory=dict[int, str])  # rank -> node
    closed: dict[int, RankStats] = field(default_factory=dict[int, RankStats])
    lost_order: list[int] = field(default_factory=list[int])  # ranks gone without close(), first first
    lost_steps: list[StepLost] = field(default_factory=list[StepLost])
    #: (array, step) complete but never analysed: newer steps came (backpressure.policy latest)
    dropped_latest: list[tuple[str, int]] = field(default_factory=list[tuple[str, int]])
    errors: list[RankError | TriggerFailed] = field(default_factory=list[RankError | TriggerFailed])
    #: what node actors warned of (blocks that will not fit their object store), once each
    warnings: list[str] = field(default_factory=list[str])
    #: per array, the ranks that have entered their first publish of it, and when (monotonic seconds)
    publishing: dict[str, dict[int, float]] = field(default_factory=dict[str, dict[int, float]])
    #: the communicator sizes the ranks reported when they joined (one, the run's, unless MPI is misconfigured)
    sizes: set[int] = field(default_factory=set[int])
    #: per array with ``finite`` (a monitor of nonfinite): steps with NaN or Inf, how many values, first and last step
    nonfinite: dict[str, dict[str, int]] = field(default_factory=dict[str, dict[str, int]])
    joins: int = 0
    blocks: int = 0  # blocks delivered to the driver or reported lost
    last_step: int = -1
    partial: int = 0

    @property
    def lost_ranks(self) -> set[int]:
        """Ranks that left without ``close()``: they died, or the launcher ended them."""
        return set(self.lost_order)

    def lose(self, rank: int) -> None:
        if rank not in self.lost_order:
            self.lost_order.append(rank)

    def record(
        self, event: RankJoined | RankClosed | Publishing | RankLost | RankError | TriggerFailed | NodeWarning
    ) -> None:
        """What a rank (or its node actor) says of itself."""
        match event:
            case RankJoined(rank=rank, size=size, node=node):
                self.hello[rank] = node
                self.sizes.add(size)
                self.joins += 1
            case RankClosed(rank=rank, stats=stats):
                self.closed[rank] = stats
            case Publishing(rank=rank, array=array):
                self.publishing.setdefault(array, {})[rank] = time.monotonic()
            case RankLost(rank=rank):
                self.lose(rank)
                log.error("rank %s disconnected without close()", rank)
            case TriggerFailed():  # the first failure, then at the end the same with its count
                same = [i for i, e in enumerate(self.errors) if isinstance(e, TriggerFailed) and e.error == event.error]
                if same:
                    self.errors[same[0]] = event
                else:
                    self.errors.append(event)
            case RankError():
                self.errors.append(event)
            case NodeWarning(node=node, message=message):
                self.warnings.append(f"node {node[:8]}: {message}")

    def count_nonfinite(self, step: int, values: Mapping[str, float]) -> None:
        """A step's monitor values: count the NaN and Inf that ``nonfinite(ARRAY)`` found."""
        for key, value in values.items():
            if key.startswith("nonfinite(") and value:
                array = key[len("nonfinite(") : -1]
                seen = self.nonfinite.setdefault(
                    array, {"steps": 0, "values": 0, "first_step": step, "last_step": step}
                )
                seen["steps"] += 1
                seen["values"] += int(value)
                seen["last_step"] = max(seen["last_step"], step)

    @property
    def done(self) -> set[int]:
        """Ranks that closed or are gone."""
        return set(self.closed) | self.lost_ranks


class RunWatch:
    """The deadlines of one run (see the module)."""

    def __init__(
        self, timeouts: Timeouts, nranks: int, run_dir: Path, subsets: Mapping[str, tuple[int, ...]] | None = None
    ) -> None:
        self.timeouts, self.nranks, self.run_dir = timeouts, nranks, run_dir
        #: the arrays the contract gives to a subset of the ranks (``ranks:``): only those publish them
        self.subsets = subsets or {}
        now = time.monotonic()
        self._connect_by = now + timeouts.connect
        self._progress = (-1, now)  # blocks seen, and since when
        self._exited_at: float | None = None

    def finished(self, state: RunState, drained: bool) -> bool:
        """Every rank closed or is gone, and what they published is analysed (or will never come)."""
        if len(state.done) < self.nranks:
            return False
        if drained:
            return True
        now = time.monotonic()
        if state.blocks != self._progress[0]:
            self._progress = (state.blocks, now)
        elif now - self._progress[1] > self.timeouts.step:
            log.error("no block arrived for timeouts.step = %g s after every rank closed", self.timeouts.step)
            return True
        return False

    def check(self, state: RunState, alive: bool) -> None:
        """Raise if the run cannot go on; count as lost the ranks of a simulation that has exited.

        Raises
        ------
        RuntimeUnavailableError
            Ranks that never connected, or a simulation that exited before they did.
        StallError
            Ranks that never entered a publish that the other ranks wait for them in.
        """
        now = time.monotonic()
        self._check_world(state)
        if len(state.hello) < self.nranks and now > self._connect_by:
            raise RuntimeUnavailableError(
                f"{len(state.hello)} of {self.nranks} ranks connected within timeouts.connect = "
                f"{self.timeouts.connect:g} s (missing: ranks {self._missing(state)}; "
                f"run folder {self.run_dir}); did the simulation create a doreisa.Bridge on every rank, was it "
                "started with DOREISA_RUN_DIR, and with as many ranks as --np says?"
            )
        self._check_stall(state, now)
        if alive:
            return
        if len(state.hello) < self.nranks:
            raise RuntimeUnavailableError(
                f"the simulation exited after {len(state.hello)} of {self.nranks} ranks connected (missing: ranks "
                f"{self._missing(state)}); see its output above"
            )
        self._exited_at = self._exited_at or now
        if now - self._exited_at > EXIT_GRACE:  # processes are gone but their sockets did not say so
            for rank in sorted(set(state.hello) - state.done):
                state.lose(rank)

    def _check_world(self, state: RunState) -> None:
        """Ranks that report another communicator size than the run's: the launcher and mpi4py's MPI
        library differ (each process then runs alone as rank 0 of 1), or ``--np`` is wrong."""
        wrong = sorted(state.sizes - {self.nranks})
        if not wrong:
            return
        if wrong == [1] and self.nranks > 1:
            raise RuntimeUnavailableError(
                f"{state.joins} process(es) joined as rank 0 of 1 while the run expects {self.nranks} ranks: each "
                "process runs alone, so the MPI launcher and the MPI library mpi4py is built with differ (for example "
                "mpiexec from one MPI, mpi4py linked to another). Launch with that library's mpiexec (--mpiexec), or "
                "rebuild mpi4py against your MPI: pip install --no-binary mpi4py mpi4py; for a laptop or CI, "
                "pip install 'doreisa[mpich]' brings both"
            )
        raise RuntimeUnavailableError(
            f"ranks report a communicator of {' and '.join(map(str, wrong))} ranks, but the run expects {self.nranks} "
            "(--np): start the simulation on as many ranks as --np says"
        )

    def _missing(self, state: RunState) -> str:
        return rank_ranges(set(range(self.nranks)) - set(state.hello))

    def _check_stall(self, state: RunState, now: float) -> None:
        """A rank that never enters the first publish of an array, while others wait for it in that collective."""
        for array, entered in state.publishing.items():
            silent = sorted(set(self.subsets.get(array, range(self.nranks))) - set(entered) - state.done)
            waited = now - min(entered.values())
            if silent and waited > self.timeouts.step:
                raise StallError(
                    f"ranks {rank_ranges(silent)} never called publish({array!r}) while ranks "
                    f"{rank_ranges(entered)} have waited "
                    f"{waited:.0f} s for them in its first collective (timeouts.step = {self.timeouts.step:g} s); "
                    "are they stuck, or do they skip this array? Every rank publishes every array, but those the "
                    "contract gives to some ranks (ranks:)"
                )


def rank_ranges(ranks: Iterable[int]) -> str:
    """``[0-2, 5, 7-9]``: a set of ranks short enough for a message, however many thousands there are."""
    spans: list[list[int]] = []
    for rank in sorted(ranks):
        if spans and rank == spans[-1][1] + 1:
            spans[-1][1] = rank
        else:
            spans.append([rank, rank])
    return "[" + ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) + "]"

"""What one rank did: the counts a :class:`~doreisa.runtime.rank.bridge.Bridge` keeps and returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from doreisa.runtime.protocol import RankStats


@dataclass
class BridgeStats:
    """What one rank did; returned by :meth:`~doreisa.runtime.rank.bridge.Bridge.close`."""

    calls: int = 0
    published: int = 0
    bytes_copied: int = 0
    skipped: int = 0
    dropped: int = 0
    not_selected: int = 0
    max_in_flight: int = 0
    #: posts that found the node actor asleep and woke it with a system call (the others cost none)
    wakes: int = 0
    #: seconds spent in publish() beyond the fast path of unwanted steps (a function call, not timed)
    publish_s: float = 0.0
    skipped_steps: list[tuple[str, int]] = field(default_factory=list[tuple[str, int]])

    def record(self) -> RankStats:
        """A frozen copy, for the runtime."""
        return RankStats(**{**dataclasses.asdict(self), "skipped_steps": tuple(self.skipped_steps)})

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        return {**dataclasses.asdict(self), "skipped_steps": [list(s) for s in self.skipped_steps]}

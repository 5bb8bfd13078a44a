"""Every message that crosses a process boundary: a frozen record, defined once here, and its encoding.

The processes of a run: each rank, its node's node actor, the head actor, the analytics driver:

* **rank -> node actor**, on a Unix socket: :data:`RankMessage` (:class:`Hello`, ...); the
  blocks go through shared memory (:mod:`doreisa.runtime.ring`), announced by a ``wake``
  record only when the node actor sleeps.
* **node actor -> rank**, same socket: :class:`Welcome`, :class:`Done` (the analytics finished
  these steps, and took these :class:`Decision`), and a ``free`` record that wakes a rank
  waiting for a slot.
* **node actor -> head -> driver**, as Ray call arguments: :class:`BlockRecord` and the
  :data:`Event` records, then :class:`CompleteStep` and :class:`StepLost` from the head, in a
  :class:`Taken`.

How they travel on the socket (a length and a msgpack-encoded tagged record; ``wake`` and
``free`` as fixed-size binary records) is :mod:`doreisa.runtime.wire`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec

from doreisa.runtime.plan import RankPlan


class Record(msgspec.Struct, frozen=True, tag=True, tag_field="t"):
    """Base of every message: frozen, tagged with its class name."""


# -- rank <-> node actor ----------------------------------------------------------------------


class Hello(Record, frozen=True):
    """A rank connects to its node actor."""

    rank: int
    size: int
    pid: int
    host: str


class Welcome(Record, frozen=True):
    """The node actor's answer: who it is, and the run's contract.

    The rank runs ``plan``, the contract compiled where it was loaded; ``contract`` is the same as
    plain data (``Contract.to_plain``), which the rank reads only if the simulation asks for
    ``Bridge.contract`` (building pydantic models is most of what a rank would pay to start).
    """

    node_id: str
    contract: dict[str, Any]
    plan: RankPlan
    store_bytes: int | None = None  # the node's Ray object store; None: unknown (no check of block sizes)


class RingOpened(Record, frozen=True):
    """A rank created its shared memory ring for ``array``: where it is and what its slots hold."""

    array: str
    ring_id: int
    index: tuple[int, ...]  # position of the rank's block in the grid of chunks the analytics see
    path: str
    slots: int
    slot_size: int
    shape: tuple[int, ...]  # of one block, as copied (after preprocessing)
    dtype: str  # numpy ``dtype.str``
    chunks: tuple[tuple[int, ...], ...]  # the whole grid of chunks, per dimension
    nblocks: int  # blocks of a complete step


class RankStats(Record, frozen=True):
    """What one rank did, as :meth:`doreisa.Bridge.close` returns it (as a dict)."""

    calls: int = 0
    published: int = 0
    bytes_copied: int = 0
    skipped: int = 0
    dropped: int = 0
    not_selected: int = 0
    max_in_flight: int = 0
    wakes: int = 0  # posts that found the node actor asleep and woke it with a system call
    publish_s: float = 0.0  # seconds spent in publish() beyond its fast path (waits for room included)
    skipped_steps: tuple[tuple[str, int], ...] = ()


class Close(Record, frozen=True):
    """A rank closes its bridge; every block it posted before was taken."""

    rank: int
    stats: RankStats


class Decision(Record, frozen=True):
    """What every rank applies at the same step: trigger switches, cadence overrides, steering values.

    ``apply_at`` is set in deterministic feedback (the decided step + lag); in asynchronous mode
    the ranks agree on the step when rank 0 broadcasts it. ``local``: taken by every rank alike
    (a trigger on monitors), applied at the next step without a broadcast.
    """

    seq: int
    step: int
    source: str
    apply_at: int | None = None
    triggers: dict[str, bool] = msgspec.field(default_factory=dict)
    cadence: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)  # array -> Cadence fields
    steering: dict[str, Any] = msgspec.field(default_factory=dict)
    values: dict[str, float] = msgspec.field(default_factory=dict)
    local: bool = False


class Done(Record, frozen=True):
    """The analytics finished these (array, step); the decisions they took on the way."""

    items: tuple[tuple[str, int], ...]
    decisions: tuple[Decision, ...] = ()


class CadenceChange(Record, frozen=True):
    """One array's cadence before and after a decision (``Cadence`` fields)."""

    array: str
    old: dict[str, Any]
    new: dict[str, Any]


class Applied(Record, frozen=True):
    """Rank 0 applied ``decision`` at step ``applied_at`` (what provenance records)."""

    rank: int
    applied_at: int
    decision: Decision
    changes: tuple[CadenceChange, ...]


class MonitorValues(Record, frozen=True):
    """The monitors' values at one step, by ``reduction(array)``."""

    step: int
    time: float | None
    values: dict[str, float]


class MonitorBatch(Record, frozen=True):
    """Monitored steps, sent by rank 0 in batches (one message per step costs rank 0 a system call)."""

    rank: int
    records: tuple[MonitorValues, ...]


class Publishing(Record, frozen=True):
    """A rank enters its first publish of ``array`` (and the collective in which the ranks agree on its layout)."""

    rank: int
    array: str


class TriggerFailed(Record, frozen=True):
    """Triggers evaluated by the ranks could not be evaluated, first at ``step`` (every rank skips them alike).

    Rank 0 reports the first failure at once, and at ``close()`` how many steps failed (``count``).
    """

    rank: int
    step: int
    error: str
    count: int = 1


class NodeInfo(Record, frozen=True):
    """What a node actor writes in the run folder (``nodes/<id>.json``) for the ranks of its host to find it."""

    node_id: str
    host: str
    socket: str  # its Unix socket
    ingest: bool  # False: an analytics node (in transit), where no rank connects


RankMessage: TypeAlias = Hello | RingOpened | Close | Applied | MonitorBatch | TriggerFailed | Publishing
NodeMessage: TypeAlias = Welcome | Done


# -- node actor -> head -> driver ---------------------------------------------------------------


class BlockRecord(Record, frozen=True):
    """A block in Ray's object store: which array and step, where in the grid, who holds it."""

    array: str
    step: int
    time: float | None
    index: tuple[int, ...]
    chunks: tuple[tuple[int, ...], ...]
    nblocks: int
    dtype: str
    rank: int
    node: str  # the node actor that took it from the rank
    where: str  # the Ray node whose store holds it (an analytics node in transit)
    ref: Any  # the ray.ObjectRef of the object that holds it
    part: int | None = None  # None: the object is the block; i: the block is the object's i-th
    tags: int = 0  # the triggers active on every rank at this step, one bit per trigger of the contract
    # wall-clock times (time.time()) of its hops, for the latency profile (benchmarks/scenarios.py):
    # the node actor began copying it out of its slot; it was stored (or relayed)
    seen: float = 0.0
    stored: float = 0.0


class RankJoined(Record, frozen=True):
    """A rank said hello to node actor ``node``."""

    rank: int
    size: int
    node: str


class RankClosed(Record, frozen=True):
    """A rank closed its bridge."""

    rank: int
    node: str
    stats: RankStats


class RankLost(Record, frozen=True):
    """A rank's connection ended without ``Close``: it died, or the launcher ended it."""

    rank: int
    node: str


class RankError(Record, frozen=True):
    """Something a node actor could not do for a rank (a bad message, the store refused a block)."""

    rank: int | None
    node: str
    error: str


class NodeWarning(Record, frozen=True):
    """Something a node actor saw that will not fail the run but costs it (blocks that will not fit its store)."""

    node: str
    message: str


class PlacementChanged(Record, frozen=True):
    """A node actor moved an array placed ``auto`` in situ or in transit, from ``step`` on."""

    node: str
    array: str
    step: int
    where: str  # "in_situ" or "in_transit"
    held: int  # bytes of the node's steps in situ not analysed yet, when it decided
    store: int  # the node's object store


class StepLost(Record, frozen=True):
    """A step of an array that stayed incomplete (reported by the head, or at the end of the run), or
    whose blocks were lost with an analytics node (``reason`` says so; empty: incomplete)."""

    array: str
    step: int
    have: int
    expected: int
    ranks_seen: tuple[int, ...]
    reason: str = ""


class StepDropped(Record, frozen=True):
    """A complete step the analytics never started: newer ones came (``backpressure.policy: latest``)."""

    array: str
    step: int
    blocks: int  # how many: they count as delivered


Event: TypeAlias = (
    RankJoined
    | RankClosed
    | RankLost
    | RankError
    | NodeWarning
    | PlacementChanged
    | Applied
    | MonitorBatch
    | TriggerFailed
    | StepLost
    | StepDropped
    | Publishing
)


class NodeCounts(Record, frozen=True):
    """What one node actor did: blocks and bytes taken from its ranks, objects stored and the time it took."""

    node: str
    blocks: int
    bytes: int
    ranks: int
    puts: int
    put_seconds: float
    cpu_s: float | None = None  # CPU seconds of this node's Ray processes (its raylet's tree) in the run
    not_stored: int = 0  # blocks taken from its ranks that Ray would not store (a full store and disk): lost
    store_error: str = ""  # the first such refusal, as it was reported (a RankError)


class TransitCounts(Record, frozen=True):
    """What one in-transit relay received."""

    blocks: int
    bytes: int


class CompleteStep(Record, frozen=True):
    """Every block of one step of one array: what the driver turns into a Dask array."""

    array: str
    step: int
    time: float | None
    chunks: tuple[tuple[int, ...], ...]
    dtype: str
    blocks: dict[tuple[int, ...], Any]  # grid index -> object reference (numpy blocks in unit tests)
    nodes: dict[tuple[int, ...], str] = msgspec.field(default_factory=dict)  # index -> Ray node holding it
    parts: dict[tuple[int, ...], int] = msgspec.field(default_factory=dict)  # index -> position in its object
    tags: int = 0  # the triggers active at this step, one bit per trigger of the contract
    # wall-clock times of the step's hops (the latest block's): seen and stored by its node actor, and
    # when the head had every block; the latency profile reads them (benchmarks/scenarios.py)
    hops: tuple[float, float, float] = (0.0, 0.0, 0.0)


class Taken(Record, frozen=True):
    """What the driver takes from the head at once: complete steps, events, and steps still partial.

    ``incarnation`` is new at every start of the head actor (a head that Ray restarted is empty);
    ``applied`` says, per node actor, how many of its batches of the head's current epoch were
    applied: their events are in this or an earlier ``Taken`` (:mod:`doreisa.runtime.cluster.rebuild`).
    """

    steps: tuple[CompleteStep, ...]
    events: tuple[Event, ...]
    partial: int
    incarnation: str = ""
    applied: dict[str, int] = msgspec.field(default_factory=dict)


def describe(record: Any) -> str:
    """A record's type name, for errors (``Applied``), or the Python type of anything else."""
    return type(record).__name__

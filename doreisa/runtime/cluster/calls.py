"""The facade over Ray for doreisa's own actors: every call has a deadline, every Ray failure becomes ours.

A dead or stuck actor surfaces in Ray as ``RayActorError`` (``ActorDiedError``,
``ActorUnavailableError``), ``GetTimeoutError``, or a ``RayTaskError`` wrapping a bug in the
actor's code. The session turns each into a :class:`~doreisa.errors.ClusterError` that names
the actor (and the step, when there is one), so ``doreisa run`` reports what died and still
writes its summary. Analytics' own tasks are not called through here: their failures are the
analytic's, recorded by the driver.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError, RayTaskError

from doreisa.errors import ClusterError

log = logging.getLogger("doreisa.session")

_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
#: Seconds an actor has to answer a control call (counts, flush, stop): these do no work to speak of.
CONTROL_TIMEOUT = 60.0


def ask(call: Any, *, what: str, timeout: float = CONTROL_TIMEOUT, step: int | None = None) -> Any:
    """``ray.get`` of ``call`` (an object reference, or a list of them) made to the actor named ``what``.

    Raises
    ------
    ClusterError
        If the actor died, is unreachable, raised, or did not answer within ``timeout`` seconds;
        ``transient`` when Ray says it is unavailable for now (restarting).
    """
    at = "" if step is None else f" at step {step}"
    try:
        return ray.get(call, timeout=timeout)
    except GetTimeoutError:
        raise ClusterError(
            f"the {what} did not answer within {timeout:g} s{at}; is the Ray cluster overloaded?", actor=what, step=step
        ) from None
    except ActorUnavailableError as exc:  # the same words: Ray's reason says 'unavailable', the callers match 'died'
        raise ClusterError(f"the {what} died{at}: {_reason(exc)}", actor=what, step=step, transient=True) from exc
    except RayActorError as exc:
        raise ClusterError(f"the {what} died{at}: {_reason(exc)}", actor=what, step=step) from exc
    except RayError as exc:
        raise ClusterError(f"the {what} failed{at}: {_reason(exc)}", actor=what, step=step) from exc


def kill(actor: Any, *, what: str) -> None:
    """``ray.kill``, which never raises: a dead actor is what we wanted."""
    try:
        ray.kill(actor)
    except Exception as exc:  # already gone, or the cluster is
        log.debug("could not kill the %s: %s", what, exc)


class GcsWatch:
    """Is the Ray head node's GCS still there? Checked without Ray, which would only notice in a minute.

    When its GCS is gone, every Ray process of the cluster ends itself after
    ``gcs_rpc_server_reconnect_timeout_s`` (60 s), this driver included, mid-cleanup and without
    a summary (reliability case F12). Actor calls between workers keep working meanwhile, so a
    run that knows early can still stop its actors, write its summary and shut Ray down. A TCP
    connection to the GCS's port, at most every ``every`` s: refused (or not accepted within
    ``every`` s) ``misses`` times in a row, and the GCS is lost. About 10 s: a GCS that restarts
    (Ray's GCS fault tolerance, with an external Redis) is back before, and the cleanup has
    the rest of Ray's minute.
    """

    def __init__(
        self,
        address: str,
        *,
        every: float = 1.0,
        misses: int = 10,
        connect: Callable[[tuple[str, int], float], Any] = socket.create_connection,
    ) -> None:
        host, _, port = address.rpartition(":")
        self.address, self._where = address, (host.strip("[]"), int(port))
        self._every, self._misses, self._connect = every, misses, connect
        self._missed, self._next = 0, 0.0

    def check(self, now: float | None = None) -> None:
        """Raises ClusterError once the GCS has refused ``misses`` connections in a row (a no-op between checks)."""
        now = time.monotonic() if now is None else now
        if now < self._next:
            return
        self._next = now + self._every
        try:
            self._connect(self._where, self._every).close()
        except OSError as exc:
            self._missed += 1
            if self._missed >= self._misses:
                raise ClusterError(
                    f"the Ray head node's GCS at {self.address} is gone ({self._missed} connections refused in a row: "
                    f"{exc}); Ray ends every process of the cluster within a minute, so the run ends now with what "
                    "it analysed",
                    actor="GCS",
                ) from None
        else:
            self._missed = 0


class ActorWatch:
    """Are the run's node actors alive? Asked while the run serves, without ever waiting for them.

    A node actor that dies (its Ray node removed, its worker killed) takes the blocks of its ranks
    with it, and its ranks detach; nothing else would tell the session, whose steps then stay
    incomplete one ``timeouts.step`` after another (reliability case F5). At most every
    ``every`` s each actor gets a cheap call (``node_id``); answers are collected at the next
    checks; a dead actor, or one silent for ``patience`` s, is a :class:`ClusterError`. A call
    to an actor whose node vanished may wait instead of failing: while an answer is late, Ray's
    list of alive nodes is read too (Ray marks a silent node dead after about 15 s).
    """

    def __init__(
        self, actors: list[tuple[Any, str, str]], *, every: float = 2.0, patience: float = CONTROL_TIMEOUT
    ) -> None:
        self._actors, self._every, self._patience = actors, every, patience  # (actor, name, its node's id)
        self._pending: dict[Any, tuple[str, str]] = {}  # ping -> the actor's name and node
        self._sent, self._next, self._nodes_read = 0.0, 0.0, 0.0

    def forget(self, name: str) -> None:
        """Stop asking the actor ``name`` (it died, and the run goes on without it)."""
        self._actors = [a for a in self._actors if a[1] != name]
        self._pending = {ping: a for ping, a in self._pending.items() if a[0] != name}

    def check(self, now: float | None = None) -> None:
        """Collect the answers that came, send the next pings when due; raises ClusterError for a dead actor."""
        now = time.monotonic() if now is None else now
        if self._pending:
            ready, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0)
            for ping in ready:
                ask(ping, what=self._pending.pop(ping)[0], timeout=1.0)  # raises if the actor died
            if self._pending and now - self._sent > self._every and now - self._nodes_read > self._every:
                self._nodes_read = now
                alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
                for name, node in self._pending.values():
                    if node not in alive:
                        raise ClusterError(f"the {name} died: Ray marked its node dead", actor=name)
            if self._pending and now - self._sent > self._patience:
                name = next(iter(self._pending.values()))[0]
                raise ClusterError(f"the {name} did not answer within {self._patience:g} s", actor=name)
        elif now >= self._next:
            self._pending = {actor.node_id.remote(): (name, node) for actor, name, node in self._actors}
            self._sent, self._next = now, now + self._every


def _reason(exc: BaseException) -> str:
    """What went wrong, in one line: the actor's own exception, or the first line of Ray's message."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, RayTaskError) and isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = _COLOURS.sub("", str(exc)).strip().splitlines()
    return text[0] if text else type(exc).__name__

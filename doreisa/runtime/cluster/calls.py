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
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

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
        If the actor died, is unreachable, raised, or did not answer within ``timeout`` seconds.
    """
    at = "" if step is None else f" at step {step}"
    try:
        return ray.get(call, timeout=timeout)
    except GetTimeoutError:
        raise ClusterError(
            f"the {what} did not answer within {timeout:g} s{at}; is the Ray cluster overloaded?", actor=what, step=step
        ) from None
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


def _reason(exc: BaseException) -> str:
    """What went wrong, in one line: the actor's own exception, or the first line of Ray's message."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, RayTaskError) and isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = _COLOURS.sub("", str(exc)).strip().splitlines()
    return text[0] if text else type(exc).__name__

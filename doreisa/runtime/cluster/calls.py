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


def _reason(exc: BaseException) -> str:
    """What went wrong, in one line: the actor's own exception, or the first line of Ray's message."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, RayTaskError) and isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = _COLOURS.sub("", str(exc)).strip().splitlines()
    return text[0] if text else type(exc).__name__

"""What an analytic may ask of the running simulation: steering values and cadence changes."""

from __future__ import annotations

from typing import Any

from doreisa.contract import Cadence
from doreisa.errors import AnalyticsError

_SCALARS = (bool, int, float, str)


class Feedback:
    """Collects an analytic's requests for one step; the runtime sends them to every rank.

    An analytic receives it by declaring a keyword-only ``feedback`` parameter. The contract
    must enable the channel (``feedback: {enabled: true}``, implied by analytics-side
    triggers). Every rank applies the requests at the same step: as soon as the ranks agree
    (``feedback.mode: async``) or exactly ``lag`` steps after the analysed step
    (``deterministic``).

    Examples
    --------
    >>> @doreisa.analytic("steer")  # doctest: +SKIP
    ... def steer(temperature, *, feedback):
    ...     if temperature.max().compute() > 400:
    ...         feedback.send(dt=0.05)
    ...         feedback.set_cadence("temperature", every=5)
    """

    def __init__(self, arrays: frozenset[str]) -> None:
        self._arrays = arrays
        self.steering: dict[str, Any] = {}
        self.cadence: dict[str, dict[str, Any]] = {}

    def send(self, **values: Any) -> None:
        """Send steering values (numbers, strings, booleans, or lists of them) to the simulation.

        Raises
        ------
        AnalyticsError
            For a value that cannot be sent as plain data.
        """
        for key, value in values.items():
            is_list = isinstance(value, list | tuple)
            items: list[Any] = list(value) if is_list else [value]  # pyright: ignore[reportUnknownArgumentType]
            if not all(isinstance(v, _SCALARS) for v in items):
                raise AnalyticsError(
                    f"feedback.send({key}=...): {type(value).__name__} is not plain data; send numbers, strings, "
                    "booleans or lists of them (convert numpy values with float())"
                )
            self.steering[key] = items if is_list else value
        return None

    def set_cadence(
        self,
        array: str,
        *,
        every: int | None = None,
        every_time: float | None = None,
        never: bool = False,
        start: float = 0,
        stop: float | None = None,
    ) -> None:
        """Change the base cadence of ``array`` (active triggers still take precedence); ``never``: copy none.

        Raises
        ------
        AnalyticsError
            For an unknown array or an invalid cadence.
        """
        if array not in self._arrays:
            raise AnalyticsError(f"feedback.set_cadence: unknown array {array!r}; known: {sorted(self._arrays)}")
        try:
            cadence = Cadence(every=every, every_time=every_time, never=never or None, start=start, stop=stop)
        except ValueError as exc:
            raise AnalyticsError(f"feedback.set_cadence({array!r}): {exc}") from None
        self.cadence[array] = cadence.model_dump(exclude_none=True)

    def __bool__(self) -> bool:
        return bool(self.steering or self.cadence)

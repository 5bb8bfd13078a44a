"""Which steps of an array are wanted, by step count or by simulation time."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from doreisa.contract import Cadence
from doreisa.runtime.cadence import ArrayCadence


def _wanted_steps(cadence: Cadence, times: list[float | None]) -> list[int]:
    schedule = ArrayCadence(cadence)
    return [step for step, t in enumerate(times) if schedule.wanted(step, t)]


def _steps(cadence: Cadence, n: int) -> list[int]:
    return _wanted_steps(cadence, [None] * n)


def _reference(times: list[Fraction], period: Fraction, start: Fraction, stop: Fraction | None) -> list[int]:
    """A step is wanted when its time first reaches or passes a multiple start + k*period (exact arithmetic)."""
    wanted, reached = [], -1
    for step, t in enumerate(times):
        if t < start or (stop is not None and t > stop):
            continue
        k = (t - start) // period  # last multiple reached at t
        if k > reached:
            wanted.append(step)
            reached = k
    return wanted


def _cumulative(deltas: list[Fraction], n: int) -> tuple[list[Fraction], list[float]]:
    exact, floats, t, tf = [], [], Fraction(0), 0.0
    for dt in itertools.islice(itertools.cycle(deltas), n):
        exact.append(t)
        floats.append(tf)
        t += dt
        tf += float(dt)
    return exact, floats


# -- every N steps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cadence", "expected"),
    [
        (Cadence(every=1), list(range(12))),
        (Cadence(every=3), [0, 3, 6, 9]),
        (Cadence(every=3, start=2), [2, 5, 8, 11]),
        (Cadence(every=3, start=2, stop=8), [2, 5, 8]),
        (Cadence(every=4, start=1, stop=9), [1, 5, 9]),
        (Cadence(every=5, start=12), []),
    ],
)
def test_every_steps(cadence: Cadence, expected: list[int]) -> None:
    assert _steps(cadence, 12) == expected


def test_every_ignores_time() -> None:
    schedule = ArrayCadence(Cadence(every=2))
    assert [schedule.wanted(s, 100.0 - s) for s in range(5)] == [True, False, True, False, True]


def test_steps_may_jump() -> None:
    schedule = ArrayCadence(Cadence(every=10))
    assert [s for s in (0, 7, 20, 25, 30, 1000) if schedule.wanted(s, None)] == [0, 20, 30, 1000]


# -- idempotence ------------------------------------------------------------------------------


def test_same_step_twice_gives_same_answer_by_time() -> None:
    schedule = ArrayCadence(Cadence(every_time=0.5))
    assert schedule.wanted(0, 0.0) is True
    assert schedule.wanted(0, 0.0) is True  # wants() then publish() for the same step
    assert schedule.wanted(1, 0.2) is False
    assert schedule.wanted(1, 0.2) is False
    assert schedule.wanted(2, 0.5) is True
    assert schedule.wanted(2, 0.5) is True


def test_same_step_twice_gives_same_answer_by_steps() -> None:
    schedule = ArrayCadence(Cadence(every=2))
    assert [schedule.wanted(s, None) for s in (0, 0, 1, 1, 2, 2)] == [True, True, False, False, True, True]


# -- every T of simulation time ---------------------------------------------------------------


def test_varying_dt_wants_first_step_reaching_each_multiple() -> None:
    deltas = [Fraction(3, 10), Fraction(1, 10), Fraction(9, 20)]
    exact, floats = _cumulative(deltas, 40)
    got = _wanted_steps(Cadence(every_time=0.5), list(floats))
    assert got == _reference(exact, Fraction(1, 2), Fraction(0), None)
    # times 0, .3, .4, .85, 1.15, 1.25, 1.7, 2.0, 2.1, 2.55, 2.85, 2.95, 3.4, 3.7 ...
    assert got[:8] == [0, 3, 4, 6, 7, 9, 12, 13]


def test_time_jumping_over_several_multiples_wants_one_step() -> None:
    times = [0.0, 1.7, 1.8, 2.0, 2.4, 2.6]
    assert _wanted_steps(Cadence(every_time=0.5), times) == [0, 1, 3, 5]


def test_time_start_and_stop_are_in_time_units() -> None:
    deltas = [Fraction(3, 10), Fraction(1, 10), Fraction(9, 20)]
    exact, floats = _cumulative(deltas, 40)
    cadence = Cadence(every_time=0.5, start=1.0, stop=3.0)
    got = _wanted_steps(cadence, list(floats))
    assert got == _reference(exact, Fraction(1, 2), Fraction(1), Fraction(3))
    # times 1.15 (first >= 1), 1.7, 2.0, 2.55, and 3.0 is never reached exactly (2.95 then 3.4)
    assert got == [4, 6, 7, 9]


def test_stop_is_inclusive_in_time() -> None:
    times = [0.0, 0.5, 1.0, 1.5]
    assert _wanted_steps(Cadence(every_time=0.5, stop=1.0), times) == [0, 1, 2]


def test_floating_point_accumulation_does_not_miss_multiples() -> None:
    times, t = [], 0.0
    for _ in range(101):
        times.append(t)
        t += 0.1  # 0.1 * 10 accumulates to 0.9999999999999999
    assert times[10] < 1.0
    assert _wanted_steps(Cadence(every_time=0.5), times) == list(range(0, 101, 5))


def test_no_time_means_not_wanted_by_time() -> None:
    schedule = ArrayCadence(Cadence(every_time=0.5))
    assert schedule.wanted(0, None) is False
    assert schedule.wanted(1, 0.0) is True


def test_time_before_start_is_not_wanted() -> None:
    times = [0.0, 0.4, 0.9, 1.3, 1.4, 1.6]
    assert _wanted_steps(Cadence(every_time=0.5, start=1.0), times) == [3, 5]


@pytest.mark.parametrize(
    "cadence",
    [Cadence(every=1), Cadence(every=7), Cadence(every=3, start=5), Cadence(every=4, start=2, stop=21)],
)
def test_next_wanted_is_the_next_step_wanted(cadence: Cadence) -> None:
    schedule = ArrayCadence(cadence)
    wanted = [s for s in range(60) if ArrayCadence(cadence).wanted(s, None)]
    for step in range(40):
        after = [s for s in wanted if s > step]
        assert schedule.next_wanted(step) == (after[0] if after else None), step

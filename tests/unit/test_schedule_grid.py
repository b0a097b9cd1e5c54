"""SPEC §6 fire grid: due times are a pure function of the previous due, the interval and now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from heldar.services.schedules import effective_due, next_due_after

T0 = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


class FakeClock:
    """Wall time that only moves when the test moves it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, seconds: float) -> datetime:
        self.now += s(seconds)
        return self.now


def test_on_time_fire_moves_one_interval() -> None:
    assert next_due_after(T0, 5, T0) == T0 + s(5)
    assert next_due_after(T0, 5, T0 + s(0.2)) == T0 + s(5)  # a late start does not shift it


def test_fire_that_completes_late_still_keeps_the_grid() -> None:
    # "every interval after the previous due time, never after the previous completion"
    assert next_due_after(T0, 60, T0 + s(59.999)) == T0 + s(60)


def test_downtime_fires_once_then_resumes_on_the_grid() -> None:
    clock = FakeClock(T0)
    due = T0
    fires = []
    # the kernel is down from T0 + 1 s to T0 + 23.5 s: due points 5, 10, 15, 20 are missed
    clock.advance(23.5)
    for _ in range(4):
        fires.append(clock.now)  # fires as soon as it can
        due = next_due_after(due, 5, clock.now)
        clock.now = max(clock.now, due)  # sleeps until the next due time
    assert fires == [T0 + s(23.5), T0 + s(25), T0 + s(30), T0 + s(35)]


def test_exactly_on_a_missed_point_counts_it_as_the_catch_up() -> None:
    assert next_due_after(T0, 5, T0 + s(10)) == T0 + s(15)


def test_effective_due() -> None:
    now = T0 + s(100)
    assert effective_due(None, 60, now) == now  # created or re-enabled: at once
    assert effective_due(T0, 60, now) == T0  # overdue: at once, with its grid point
    assert effective_due(now + s(30), 60, now) == now + s(30)
    # more than one interval ahead: the wall clock stepped back; due now, not in an hour
    assert effective_due(now + s(3600), 60, now) == now


@given(
    interval_s=st.integers(min_value=5, max_value=86_400),
    lateness_s=st.lists(st.floats(min_value=0, max_value=0.25), min_size=1, max_size=200),
)
def test_no_cumulative_drift(interval_s: int, lateness_s: list[float]) -> None:
    """However late each fire starts (within the interval), due n is exactly T0 + n * interval."""
    due = T0
    for n, late in enumerate(lateness_s, start=1):
        due = next_due_after(due, interval_s, due + s(late))
        assert due == T0 + s(n * interval_s)


@given(
    interval_s=st.integers(min_value=5, max_value=86_400),
    elapsed_us=st.integers(min_value=0, max_value=10**13),
)
def test_next_due_is_the_first_grid_point_after_now(interval_s: int, elapsed_us: int) -> None:
    now = T0 + timedelta(microseconds=elapsed_us)
    nxt = next_due_after(T0, interval_s, now)
    step = timedelta(seconds=interval_s)
    assert nxt > now
    assert nxt - step <= now or nxt - step == T0  # nothing on the grid is skipped before now
    assert (nxt - T0) % step == timedelta(0)  # on the grid
    assert nxt >= T0 + step

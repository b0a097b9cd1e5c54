"""The pure retention planner: table tests and properties over random snapshot sets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heldar.config import load_settings
from heldar.services.retention import (
    BYTES_PER_GB,
    RetentionPlan,
    RetentionPolicy,
    RetentionReason,
    plan_retention,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
HOUR_S = 3600.0
INTERVAL_S = 300.0
AGE = RetentionReason.AGE
CAP = RetentionReason.SIZE_CAP
FLOOR = RetentionReason.DISK_FLOOR


@dataclass(frozen=True)
class Row:
    name: str
    taken_at: datetime
    size_bytes: int


def rows(*spec: tuple[float, int]) -> list[Row]:
    """Rows from (age in hours, size in bytes), given oldest first."""
    return [
        Row(f"r{i}", NOW - timedelta(hours=age_h), size) for i, (age_h, size) in enumerate(spec)
    ]


def policy(
    max_age_h: float | None = None, max_total_bytes: int | None = None, min_free_bytes: int = 0
) -> RetentionPolicy:
    return RetentionPolicy(
        max_age_s=max_age_h * HOUR_S if max_age_h is not None else None,
        max_total_bytes=max_total_bytes,
        min_free_bytes=min_free_bytes,
        interval_s=INTERVAL_S,
    )


def plan(
    candidates: list[Row], p: RetentionPolicy, *, free_bytes: int = 10**12
) -> RetentionPlan[Row]:
    total = sum(r.size_bytes for r in candidates)
    return plan_retention(candidates, now=NOW, policy=p, total_bytes=total, free_bytes=free_bytes)


def decisions(result: RetentionPlan[Row]) -> list[tuple[str, RetentionReason]]:
    return [(d.snapshot.name, d.reason) for d in result.deletions]


@pytest.mark.parametrize(
    ("candidates", "p", "free_bytes", "expected"),
    [
        pytest.param(rows((5, 10), (1, 10)), policy(), 0, [], id="no-limits-nothing"),
        pytest.param(
            rows((5, 10), (3, 10), (1, 10)),
            policy(max_age_h=2),
            10**12,
            [("r0", AGE), ("r1", AGE)],
            id="age-only-older",
        ),
        pytest.param(
            rows((2, 10), (1, 10)), policy(max_age_h=2), 10**12, [], id="age-exactly-kept"
        ),
        pytest.param(
            rows((5, 10), (3, 10), (1, 10)),
            policy(max_total_bytes=15),
            10**12,
            [("r0", CAP), ("r1", CAP)],
            id="cap-oldest-first",
        ),
        pytest.param(
            rows((5, 10), (3, 10), (1, 10)),
            policy(max_total_bytes=30),
            10**12,
            [],
            id="cap-exactly-met",
        ),
        pytest.param(
            rows((5, 10), (3, 10), (1, 10)),
            policy(min_free_bytes=100),
            85,
            [("r0", FLOOR), ("r1", FLOOR)],
            id="floor-deficit-covered",
        ),
        pytest.param(
            rows((5, 10), (3, 10)),
            policy(min_free_bytes=100),
            0,
            [("r0", FLOOR), ("r1", FLOOR)],
            id="floor-unreachable-deletes-all",
        ),
        pytest.param(
            rows((5, 10), (3, 10), (2, 10), (1, 10)),
            policy(max_age_h=4, max_total_bytes=25, min_free_bytes=100),
            75,
            [("r0", AGE), ("r1", CAP), ("r2", FLOOR)],
            id="age-then-cap-then-floor",
        ),
        pytest.param(
            rows((5, 10), (3, 10)),
            policy(max_age_h=4, max_total_bytes=25, min_free_bytes=100),
            10**12,
            [("r0", AGE)],
            id="age-already-satisfies-cap",
        ),
        pytest.param(
            [Row("future", NOW + timedelta(hours=1), 10)],
            policy(max_age_h=0.5),
            10**12,
            [],
            id="future-taken-at-kept",
        ),
        pytest.param([], policy(1, 1, 10**12), 0, [], id="empty"),
    ],
)
def test_plan_table(
    candidates: list[Row],
    p: RetentionPolicy,
    free_bytes: int,
    expected: list[tuple[str, RetentionReason]],
) -> None:
    assert decisions(plan(candidates, p, free_bytes=free_bytes)) == expected


def test_plan_reports_its_outcome() -> None:
    result = plan(rows((5, 10), (3, 20), (1, 40)), policy(max_total_bytes=45), free_bytes=100)
    assert result.freed_bytes == 30
    assert result.total_bytes_after == 40
    assert result.free_bytes_after == 130
    assert result.count_by_reason() == {AGE: 0, CAP: 2, FLOOR: 0}


def test_policy_from_settings() -> None:
    settings = load_settings(
        {},
        snapshot_retention_hours=24,
        snapshot_max_gb=2.5,
        min_free_disk_gb=1,
        retention_interval_s=60,
    )
    assert RetentionPolicy.from_settings(settings) == RetentionPolicy(
        max_age_s=24 * HOUR_S,
        max_total_bytes=int(2.5 * BYTES_PER_GB),
        min_free_bytes=BYTES_PER_GB,
        interval_s=60,
    )


def test_policy_zero_means_no_limit() -> None:
    settings = load_settings({}, snapshot_retention_hours=0, snapshot_max_gb=0, min_free_disk_gb=0)
    got = RetentionPolicy.from_settings(settings)
    assert (got.max_age_s, got.max_total_bytes, got.min_free_bytes) == (None, None, 0)


MAX_SIZE_BYTES = 1000
MAX_AGE_H = 100


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Row], RetentionPolicy, int, int]:
    """Oldest-first rows, a policy, the total of all snapshots (>= the batch's), free bytes."""
    ages_h = sorted(
        draw(st.lists(st.floats(0, MAX_AGE_H, allow_nan=False), max_size=30)), reverse=True
    )
    sizes = draw(st.lists(st.integers(0, MAX_SIZE_BYTES), min_size=len(ages_h)))
    candidates = rows(*zip(ages_h, sizes, strict=False))
    batch_total = sum(r.size_bytes for r in candidates)
    total = batch_total + draw(st.integers(0, 3 * MAX_SIZE_BYTES))  # rows beyond the batch
    p = policy(
        max_age_h=draw(st.none() | st.floats(0, MAX_AGE_H, allow_nan=False)),
        max_total_bytes=draw(st.none() | st.integers(0, total + MAX_SIZE_BYTES)),
        min_free_bytes=draw(st.integers(0, 10 * MAX_SIZE_BYTES)),
    )
    free = draw(st.integers(0, 10 * MAX_SIZE_BYTES))
    return candidates, p, total, free


def run(scenario: tuple[list[Row], RetentionPolicy, int, int]) -> RetentionPlan[Row]:
    candidates, p, total, free = scenario
    return plan_retention(candidates, now=NOW, policy=p, total_bytes=total, free_bytes=free)


@given(scenarios())
def test_deletions_are_an_oldest_first_prefix(
    scenario: tuple[list[Row], RetentionPolicy, int, int],
) -> None:
    candidates = scenario[0]
    deleted = [d.snapshot for d in run(scenario).deletions]
    assert deleted == candidates[: len(deleted)]


@given(scenarios())
def test_reasons_come_in_order_age_cap_floor(
    scenario: tuple[list[Row], RetentionPolicy, int, int],
) -> None:
    order = [AGE, CAP, FLOOR]
    ranks = [order.index(d.reason) for d in run(scenario).deletions]
    assert ranks == sorted(ranks)


@given(scenarios())
def test_age_deletes_exactly_the_rows_past_the_limit(
    scenario: tuple[list[Row], RetentionPolicy, int, int],
) -> None:
    candidates, p, _, _ = scenario
    by_age = {d.snapshot.name for d in run(scenario).deletions if d.reason is AGE}
    if p.max_age_s is None:
        assert not by_age
    else:
        limit = timedelta(seconds=p.max_age_s)
        assert by_age == {r.name for r in candidates if NOW - r.taken_at > limit}


@given(scenarios())
def test_cap_and_floor_met_unless_the_batch_is_gone(
    scenario: tuple[list[Row], RetentionPolicy, int, int],
) -> None:
    candidates, p, total, free = scenario
    result = run(scenario)
    assert result.total_bytes_after == total - result.freed_bytes
    assert result.free_bytes_after == free + result.freed_bytes
    if len(result.deletions) < len(candidates):
        if p.max_total_bytes is not None:
            assert result.total_bytes_after <= p.max_total_bytes
        assert result.free_bytes_after >= p.min_free_bytes


@given(scenarios())
def test_no_deletion_beyond_need(
    scenario: tuple[list[Row], RetentionPolicy, int, int],
) -> None:
    """Each cap or floor deletion was needed: before it, the limit was still broken."""
    _, p, total, free = scenario
    for deletion in run(scenario).deletions:
        if deletion.reason is CAP:
            assert p.max_total_bytes is not None
            assert total > p.max_total_bytes
        if deletion.reason is FLOOR:
            assert free < p.min_free_bytes
        total -= deletion.snapshot.size_bytes
        free += deletion.snapshot.size_bytes


@given(scenarios())
def test_nothing_deleted_when_the_policy_holds(
    scenario: tuple[list[Row], RetentionPolicy, int, int],
) -> None:
    candidates, p, total, free = scenario
    limit = timedelta(seconds=p.max_age_s) if p.max_age_s is not None else None
    holds = (
        (limit is None or all(NOW - r.taken_at <= limit for r in candidates))
        and (p.max_total_bytes is None or total <= p.max_total_bytes)
        and free >= p.min_free_bytes
    )
    if holds:
        assert run(scenario).deletions == ()


@given(scenarios())
def test_no_limits_no_deletions(scenario: tuple[list[Row], RetentionPolicy, int, int]) -> None:
    candidates, _, total, free = scenario
    result = plan_retention(
        candidates, now=NOW, policy=policy(), total_bytes=total, free_bytes=free
    )
    assert result.deletions == ()

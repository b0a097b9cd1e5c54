"""Worker leases: the pure fair share, and the one-holder hand-over rules over a fake clock."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heldar.errors import NotFound
from heldar.media.urls import Profile
from heldar.services.ai_tasks import AiTask
from heldar.services.leases import LeaseBook, TaskRef, WorkerSpec, share_tasks

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.t)


class Tasks:
    """The one method of AiTaskRegistry the lease book reads."""

    def __init__(self, types: list[str]) -> None:
        self.tasks = [_task(n, t) for n, t in enumerate(types)]

    async def list_enabled(self) -> list[AiTask]:
        return list(self.tasks)


def _task(n: int, task_type: str) -> AiTask:
    return AiTask(
        id=f"ai_{n:032x}",
        camera_id=f"cam{n}",
        task_type=task_type,
        enabled=True,
        stream_profile=Profile.SUB,
        fps=1.0,
        width=640,
        config={},
        created_at=T0,
        updated_at=T0,
    )


def refs(n: int, task_type: str = "motion") -> list[TaskRef]:
    return [TaskRef(f"ai_{i:032x}", task_type) for i in range(n)]


def worker(worker_id: str, types: set[str] | None = None, max_tasks: int = 512) -> WorkerSpec:
    return WorkerSpec(worker_id, frozenset(types) if types is not None else None, max_tasks)


def loads(share: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in share.values():
        out[w] = out.get(w, 0) + 1
    return out


# The pure share -----------------------------------------------------------------------------


def test_two_workers_split_ten_tasks_five_and_five() -> None:
    share = share_tasks(refs(10), [worker("a"), worker("b")], {})
    assert loads(share) == {"a": 5, "b": 5}


def test_a_newcomer_takes_only_the_excess_of_the_old_holder() -> None:
    tasks = refs(10)
    alone = share_tasks(tasks, [worker("a")], {})
    assert loads(alone) == {"a": 10}
    share = share_tasks(tasks, [worker("a"), worker("b")], alone)
    assert loads(share) == {"a": 5, "b": 5}
    assert all(alone[t] == "a" for t, w in share.items() if w == "a")  # a keeps 5 of its own


def test_filters_and_caps() -> None:
    tasks = [*refs(4, "motion"), *[TaskRef(f"ai_p{i}", "person") for i in range(4)]]
    share = share_tasks(tasks, [worker("m", {"motion"}), worker("p", {"person"})], {})
    assert {w for t, w in share.items() if t.startswith("ai_p")} == {"p"}
    assert loads(share) == {"m": 4, "p": 4}
    capped = share_tasks(refs(10), [worker("a", max_tasks=2), worker("b", max_tasks=3)], {})
    assert loads(capped) == {"a": 2, "b": 3}  # the other five wait for capacity
    nobody = share_tasks(refs(3, "lpr"), [worker("a", {"motion"})], {})
    assert nobody == {}


def test_a_filtered_worker_is_not_starved_by_a_holder_of_its_type() -> None:
    persons = [TaskRef(f"ai_p{i}", "person") for i in range(5)]
    motions = [TaskRef(f"ai_m{i}", "motion") for i in range(5)]
    holdings = {t.task_id: "b" for t in persons}  # b happened to take every person task
    share = share_tasks([*persons, *motions], [worker("b"), worker("p", {"person"}, 2)], holdings)
    assert loads(share) == {"b": 8, "p": 2}
    assert sum(1 for t in persons if share[t.task_id] == "b") == 3  # b gives two up, keeps three
    assert all(share[t.task_id] == "b" for t in motions)


@given(
    n_tasks=st.integers(0, 60),
    n_workers=st.integers(1, 8),
    held=st.dictionaries(st.integers(0, 59), st.integers(0, 9)),
)
def test_share_is_balanced_and_keeps_fair_holdings(
    n_tasks: int, n_workers: int, held: dict[int, int]
) -> None:
    tasks = refs(n_tasks)
    workers = [worker(f"w{i}") for i in range(n_workers)]
    holdings = {f"ai_{t:032x}": f"w{w}" for t, w in held.items() if t < n_tasks}
    share = share_tasks(tasks, workers, holdings)
    assert set(share) == {t.task_id for t in tasks}  # everything is assigned
    counts = [loads(share).get(w.worker_id, 0) for w in workers]
    assert max(counts, default=0) - min(counts, default=0) <= 1  # five and five, not 7 and 3
    floor_share = n_tasks // n_workers
    for w in workers:  # nobody loses a task it holds while under its fair share
        held_before = sum(1 for h in holdings.values() if h == w.worker_id)
        kept = sum(1 for t, h in holdings.items() if h == w.worker_id and share[t] == h)
        assert kept >= min(held_before, floor_share)
    live = {w.worker_id for w in workers}
    held_live = {t: h for t, h in holdings.items() if h in live}
    if all(n == 1 for n in Counter(held_live.values()).values()):
        assert all(share[t] == h for t, h in held_live.items())  # one task each: nothing moves
    assert share == share_tasks(tasks, workers, holdings)  # deterministic


# The lease book -----------------------------------------------------------------------------


async def test_a_task_has_one_holder_while_two_workers_converge_to_five_and_five() -> None:
    clock = FakeClock()
    book = LeaseBook(Tasks(["motion"] * 10), clock)  # type: ignore[arg-type]
    a = await book.acquire("a", ttl_s=15)
    assert len(a.tasks) == 10
    b = await book.acquire("b", ttl_s=15)
    assert b.tasks == []  # a holds them all until it renews
    seen = []
    for _ in range(3):
        clock.t += 5
        held_a = {t.id for t in (await book.acquire("a", ttl_s=15)).tasks}
        held_b = {t.id for t in (await book.acquire("b", ttl_s=15)).tasks}
        assert not held_a & held_b  # never two holders
        seen.append((len(held_a), len(held_b)))
    assert seen[-1] == (5, 5)
    assert seen[0] == (5, 5)  # a released five at its first renewal, b took them at its next


async def test_a_dead_workers_tasks_go_to_the_survivor_after_its_lease_expires() -> None:
    clock = FakeClock()
    book = LeaseBook(Tasks(["motion"] * 10), clock)  # type: ignore[arg-type]
    ttl_s = 15
    await book.acquire("a", ttl_s=ttl_s)
    await book.acquire("b", ttl_s=ttl_s)
    await book.acquire("a", ttl_s=ttl_s)
    assert len((await book.acquire("b", ttl_s=ttl_s)).tasks) == 5
    # a dies now; b renews every ttl/3
    for step in range(1, 4):
        clock.t += ttl_s / 3
        held = len((await book.acquire("b", ttl_s=ttl_s)).tasks)
        assert held == (5 if step < 3 else 10), step
    assert [worker_id for worker_id, _, _ in book.summary()] == ["b"]


async def test_release_frees_the_tasks_at_once() -> None:
    clock = FakeClock()
    book = LeaseBook(Tasks(["motion"] * 4), clock)  # type: ignore[arg-type]
    a = await book.acquire("a")
    renewed = await book.acquire("a")
    assert renewed.lease_id == a.lease_id  # one lease per worker, renewed
    assert renewed.expires_at > T0
    await book.acquire("b")
    book.release(a.lease_id)
    assert len((await book.acquire("b")).tasks) == 4
    assert book.holder(a.tasks[0].id) == "b"
    with pytest.raises(NotFound):
        book.release(a.lease_id)


async def test_filters_limit_what_a_worker_gets() -> None:
    clock = FakeClock()
    book = LeaseBook(Tasks(["motion", "person", "person"]), clock)  # type: ignore[arg-type]
    got = await book.acquire("p", task_types=["person"], max_tasks=1)
    assert [t.task_type for t in got.tasks] == ["person"]


async def test_a_heartbeat_keeps_the_workers_lease_terms() -> None:
    clock = FakeClock()
    book = LeaseBook(Tasks(["motion", "person", "person"]), clock)  # type: ignore[arg-type]
    leased = await book.acquire("p", task_types=["person"], max_tasks=1, ttl_s=20)
    clock.t += 19
    beat = await book.heartbeat("p")
    assert [t.id for t in beat.tasks] == [t.id for t in leased.tasks]  # still one person task
    assert beat.expires_at == T0 + timedelta(seconds=19 + 20)  # renewed with its own TTL
    fresh = await book.heartbeat("q")  # never leased: the defaults
    assert {t.task_type for t in fresh.tasks} == {"motion", "person"}

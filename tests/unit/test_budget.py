from __future__ import annotations

import math
import random

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from heldar.config import MIN_GRANTED_FPS
from heldar.services.budget import SamplerKey, SamplerRequest, allocate_budget

ABS_SUM = 1e-9  # the grants may overshoot the budget by float summation only
ABS_TOTAL = 1e-6  # the total may undershoot by the round-down of each level grant


def req(camera_id: str, fps: float, priority: int = 0, profile: str = "sub") -> SamplerRequest:
    return SamplerRequest(SamplerKey(camera_id, profile), priority, fps, 640)


def granted(
    requests: list[SamplerRequest], budget_fps: float, max_samplers: int = 100
) -> dict[tuple[str, str], float | None]:
    grants = allocate_budget(requests, budget_fps, max_samplers)
    return {(k.camera_id, k.profile): g.fps for k, g in grants.items()}


def rank(r: SamplerRequest) -> tuple[int, str, str]:
    return (-r.priority, r.key.camera_id, r.key.profile)


@pytest.mark.parametrize(
    ("fps", "budget_fps", "max_samplers", "expected"),
    [
        pytest.param([1, 5, 30], 10, 100, [1, 4.5, 4.5], id="spare-flows-to-the-hungry"),
        pytest.param([1, 5, 30], 40, 100, [1, 5, 30], id="everything-fits"),
        pytest.param([4, 4, 4], 6, 100, [2, 2, 2], id="even-split"),
        pytest.param([10, 10, 10], 1, 100, [0.5, 0.5, None], id="budget-over-0.5-cuts"),
        pytest.param([10, 10, 10], 30, 2, [10, 10, None], id="max-samplers-cuts"),
        pytest.param([0.2, 10], 1, 100, [0.2, 0.8], id="slow-request-honoured"),
        pytest.param([0.2], 5, 100, [0.2], id="slow-request-never-raised"),
        pytest.param([5, 5], 0, 100, [None, None], id="no-budget"),
        pytest.param([5, 5], 10, 0, [None, None], id="no-slots"),
    ],
)
def test_allocation_table(
    fps: list[float], budget_fps: float, max_samplers: int, expected: list[float | None]
) -> None:
    # Priorities fall with the index, so the list order is the ranking.
    requests = [req(f"cam{i}", f, priority=-i) for i, f in enumerate(fps)]
    result = granted(requests, budget_fps, max_samplers)
    assert list(result.values()) == pytest.approx(expected)


def test_higher_priority_is_served_first() -> None:
    requests = [req("a", 10, priority=1), req("b", 10, priority=5), req("c", 10, priority=3)]
    assert granted(requests, 1.0) == {("b", "sub"): 0.5, ("c", "sub"): 0.5, ("a", "sub"): None}


def test_priority_ties_break_by_camera_then_profile() -> None:
    requests = [
        req("b", 10, priority=1, profile="main"),
        req("a", 10, priority=1, profile="sub"),
        req("a", 10, priority=1, profile="main"),
        req("z", 10, priority=2, profile="sub"),
    ]
    result = allocate_budget(requests, 1.5, 100)
    order = [(k.camera_id, k.profile) for k in result]
    assert order == [("z", "sub"), ("a", "main"), ("a", "sub"), ("b", "main")]
    assert [g.running for g in result.values()] == [True, True, True, False]


def test_width_is_passed_through() -> None:
    requests = [SamplerRequest(SamplerKey("a", "main"), 0, 5, 1920), req("b", 5)]
    result = allocate_budget(requests, 0.5, 100)
    assert [(g.fps, g.width) for g in result.values()] == [(0.5, 1920), (None, 640)]


@pytest.mark.parametrize(
    ("requests", "budget_fps", "max_samplers"),
    [
        ([req("a", 1), req("a", 2)], 10, 10),
        ([req("a", 0)], 10, 10),
        ([req("a", math.nan)], 10, 10),
        ([req("a", math.inf)], 10, 10),
        ([req("a", 1)], -1, 10),
        ([req("a", 1)], math.inf, 10),
        ([req("a", 1)], 10, -1),
    ],
)
def test_programming_errors_raise(
    requests: list[SamplerRequest], budget_fps: float, max_samplers: int
) -> None:
    with pytest.raises(ValueError):
        allocate_budget(requests, budget_fps, max_samplers)


@pytest.mark.parametrize("runners", [3, 7, 11, 13])
def test_an_inexact_level_is_rounded_down(runners: int) -> None:
    requests = [req(f"cam{i}", 30) for i in range(runners)]
    grants = [g.fps for g in allocate_budget(requests, 10.0, 100).values()]
    assert all(fps is not None and fps <= 10.0 / runners for fps in grants)
    assert math.fsum(fps for fps in grants if fps is not None) <= 10.0


def test_admitting_a_sampler_can_lower_an_existing_grant() -> None:
    """The documented exception: 0.9 fps runs one sampler, 1.0 fps admits a second one."""
    requests = [req("a", 10, priority=1), req("b", 10)]
    assert granted(requests, 0.9) == {("a", "sub"): 0.9, ("b", "sub"): None}
    assert granted(requests, 1.0) == {("a", "sub"): 0.5, ("b", "sub"): 0.5}


# Property tests. Few camera ids and priorities, so that ties are common.
fps_values = st.one_of(
    st.floats(min_value=0.01, max_value=120, allow_nan=False),
    st.sampled_from([0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 15.0, 30.0]),
)
request_lists = st.lists(
    st.builds(
        SamplerRequest,
        key=st.builds(SamplerKey, st.sampled_from("abcdefgh"), st.sampled_from(["main", "sub"])),
        priority=st.integers(min_value=-2, max_value=2),
        fps=fps_values,
        width=st.sampled_from([320, 640, 1920]),
    ),
    max_size=16,
    unique_by=lambda r: r.key,
)
budgets = st.floats(min_value=0, max_value=500, allow_nan=False)
caps = st.integers(min_value=0, max_value=20)


@given(request_lists, budgets, caps)
def test_grants_respect_budget_requests_and_minimum(
    requests: list[SamplerRequest], budget_fps: float, max_samplers: int
) -> None:
    result = allocate_budget(requests, budget_fps, max_samplers)
    assert set(result) == {r.key for r in requests}
    by_key = {r.key: r for r in requests}
    runners = [(by_key[k], g.fps) for k, g in result.items() if g.fps is not None]
    assert len(runners) <= max_samplers
    assert len(runners) <= budget_fps / MIN_GRANTED_FPS
    total = sum(fps for _, fps in runners)
    assert total <= budget_fps + ABS_SUM
    assert math.fsum(fps for _, fps in runners) <= budget_fps  # exact: levels are rounded down
    assert total == pytest.approx(min(budget_fps, sum(r.fps for r, _ in runners)), abs=ABS_TOTAL)
    for r, fps in runners:
        assert min(r.fps, MIN_GRANTED_FPS) <= fps <= r.fps
    assert all(g.width == by_key[k].width for k, g in result.items())


@given(request_lists, budgets, caps)
def test_shedding_hits_the_lowest_ranked_first(
    requests: list[SamplerRequest], budget_fps: float, max_samplers: int
) -> None:
    result = allocate_budget(requests, budget_fps, max_samplers)
    ranked = sorted(requests, key=rank)
    running = [result[r.key].running for r in ranked]
    slots = min(max_samplers, int(budget_fps // MIN_GRANTED_FPS), len(requests))
    assert running == [True] * slots + [False] * (len(requests) - slots)
    assert list(result) == [r.key for r in ranked]


@given(request_lists, budgets, caps, st.randoms(use_true_random=False))
def test_result_does_not_depend_on_input_order(
    requests: list[SamplerRequest], budget_fps: float, max_samplers: int, rng: random.Random
) -> None:
    shuffled = list(requests)
    rng.shuffle(shuffled)
    expected = allocate_budget(requests, budget_fps, max_samplers)
    actual = allocate_budget(shuffled, budget_fps, max_samplers)
    assert list(actual.items()) == list(expected.items())


@given(request_lists, budgets, caps)
def test_spare_budget_flows_to_those_that_want_more(
    requests: list[SamplerRequest], budget_fps: float, max_samplers: int
) -> None:
    result = allocate_budget(requests, budget_fps, max_samplers)
    by_key = {r.key: r for r in requests}
    runners = [(by_key[k].fps, g.fps) for k, g in result.items() if g.fps is not None]
    short = {fps for want, fps in runners if fps < want}
    if short:
        assert len(short) == 1  # everyone cut short sits at the one level
        (level,) = short
        assert all(fps <= level for _, fps in runners)


@given(request_lists, budgets, budgets)
def test_raising_the_budget_with_a_fixed_running_set_never_lowers_a_grant(
    requests: list[SamplerRequest], budget_a: float, budget_b: float
) -> None:
    low, high = sorted((budget_a, budget_b))
    # max_samplers binds at both budgets, so the raise admits nobody.
    max_samplers = min(len(requests), int(low // MIN_GRANTED_FPS))
    before = allocate_budget(requests, low, max_samplers)
    after = allocate_budget(requests, high, max_samplers)
    for key, grant in before.items():
        assert grant.running == after[key].running
        fps_after = after[key].fps
        if grant.fps is not None:
            assert fps_after is not None and fps_after >= grant.fps


@given(request_lists, budgets, budgets, caps)
def test_raising_the_budget_only_admits_and_never_lowers_the_total(
    requests: list[SamplerRequest], budget_a: float, budget_b: float, max_samplers: int
) -> None:
    low, high = sorted((budget_a, budget_b))
    assume(low < high)
    before = allocate_budget(requests, low, max_samplers)
    after = allocate_budget(requests, high, max_samplers)
    assert {k for k, g in before.items() if g.running} <= {k for k, g in after.items() if g.running}
    total_before = sum(g.fps for g in before.values() if g.fps is not None)
    total_after = sum(g.fps for g in after.values() if g.fps is not None)
    assert total_after >= total_before - ABS_SUM

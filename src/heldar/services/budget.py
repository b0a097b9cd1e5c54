"""The AI sampler budget (SPEC §5): who runs, and at what rate. A pure function, no I/O, no clock.

Samplers are ranked by priority (higher first), then ``camera_id``, then ``profile``. The first
``min(max_samplers, floor(budget_fps / MIN_GRANTED_FPS))`` of the ranking run; the rest are
``budget_exhausted`` (granted ``fps=None``). The runners share the budget max-min fairly
("water-filling"): each gets ``min(requested, level)``, with the level chosen so that the grants add
up to ``min(budget, sum of running requests)``.

Invariants of :func:`allocate_budget` (the unit tests check each one):
- no grant exceeds its request, and the grants never add up to more than the budget (the level is
  computed in exact rational arithmetic and rounded *down* to a float, so this holds exactly per
  grant; the float sum is off by at most a few ulps);
- every runner gets at least ``min(requested, MIN_GRANTED_FPS)``: a slow request is honoured, never
  raised, and a fast one is never starved below the minimum (the runner cap guarantees it);
- spare budget flows: a runner is granted less than it asked only when it sits at the common level,
  and no runner is granted more than that level;
- shedding hits the lowest-ranked first: the runners are a prefix of the ranking;
- the result depends on the requests, not on their order; the returned dict is in rank order;
- raising the budget never lowers a grant *while the set of runners stays the same* (for instance
  when ``max_samplers`` binds): the level only rises.

Raising the budget can admit new runners (each 0.5 fps of budget buys one more slot, up to
``max_samplers``). Then the runners only grow (no old runner is shed) and the total granted never
decreases, but a single existing grant CAN drop: with budget 0.9 only the first of two samplers
that each want 10 fps runs, at 0.9; with budget 1.0 both run, at 0.5 each. The newcomer takes its
fair share. "Raising the budget never lowers a grant" therefore holds exactly when the raise admits
nobody.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from heldar.config import MIN_GRANTED_FPS


@dataclass(frozen=True, slots=True, order=True)
class SamplerKey:
    camera_id: str
    profile: str  # "main" or "sub"


@dataclass(frozen=True, slots=True)
class SamplerRequest:
    """What a sampler's tasks want: the maximum fps and width over its enabled tasks."""

    key: SamplerKey
    priority: int  # the camera's priority; higher is served first
    fps: float
    width: int


@dataclass(frozen=True, slots=True)
class SamplerGrant:
    key: SamplerKey
    fps: float | None  # None: budget_exhausted, the sampler does not run
    width: int  # the requested width, passed through

    @property
    def running(self) -> bool:
        return self.fps is not None


def allocate_budget(
    requests: Sequence[SamplerRequest], budget_fps: float, max_samplers: int
) -> dict[SamplerKey, SamplerGrant]:
    """Grant each requested sampler a rate, or ``None`` when the budget cannot run it.

    Raises ``ValueError`` on a programming error: a duplicate key, a request rate that is not a
    positive finite number, a negative or non-finite budget, or a negative ``max_samplers``.
    """
    _check(requests, budget_fps, max_samplers)
    ranked = sorted(requests, key=_rank)
    slots = min(max_samplers, math.floor(budget_fps / MIN_GRANTED_FPS), len(ranked))
    runners, shed = ranked[:slots], ranked[slots:]
    granted_fps = _water_fill([r.fps for r in runners], budget_fps)
    grants = {
        r.key: SamplerGrant(r.key, fps, r.width)
        for r, fps in zip(runners, granted_fps, strict=True)
    }
    grants.update({r.key: SamplerGrant(r.key, None, r.width) for r in shed})
    return grants


def _rank(request: SamplerRequest) -> tuple[int, SamplerKey]:
    return (-request.priority, request.key)


def _water_fill(requested_fps: list[float], budget_fps: float) -> list[float]:
    """Max-min fair shares of ``budget_fps``, index for index with ``requested_fps``.

    Fill the smallest requests first: a request at or under the fair share of what is left is
    granted whole; once one is over, every request from there on is over too (they are sorted), and
    they all get the fair share of what is left, which is the level.
    """
    remaining = Fraction(budget_fps)
    level: Fraction | None = None
    pending = len(requested_fps)
    for fps in sorted(requested_fps):
        if Fraction(fps) * pending > remaining:
            level = remaining / pending
            break
        remaining -= Fraction(fps)
        pending -= 1
    if level is None:
        return list(requested_fps)
    level_fps = _round_down(level)
    return [fps if fps <= level else level_fps for fps in requested_fps]


def _round_down(value: Fraction) -> float:
    """The largest float not above ``value``, so that rounding never lifts a grant over budget."""
    nearest = float(value)
    return math.nextafter(nearest, -math.inf) if Fraction(nearest) > value else nearest


def _check(requests: Sequence[SamplerRequest], budget_fps: float, max_samplers: int) -> None:
    if not (math.isfinite(budget_fps) and budget_fps >= 0):
        raise ValueError(f"budget_fps must be a finite number >= 0, got {budget_fps!r}")
    if max_samplers < 0:
        raise ValueError(f"max_samplers must be >= 0, got {max_samplers!r}")
    seen: set[SamplerKey] = set()
    for request in requests:
        if request.key in seen:
            raise ValueError(f"duplicate sampler {request.key!r}: merge its tasks into one request")
        seen.add(request.key)
        if not (math.isfinite(request.fps) and request.fps > 0):
            raise ValueError(f"sampler {request.key!r} requests fps={request.fps!r}; must be > 0")

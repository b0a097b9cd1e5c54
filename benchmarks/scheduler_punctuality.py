"""Scheduler punctuality: 500 snapshot schedules, fire-time error against their grid.

**What is measured.** SPEC §6: a schedule fires first when it is created, then every
``interval_seconds`` after the previous *due time*, and a snapshot's ``taken_at`` is its fire time
("so punctuality is visible"). The scheduler stamps ``taken_at`` when it takes the fire up, before
it starts the fire's work, so the fire-time error of a snapshot is ``taken_at`` minus its grid
point ``created_at + k * interval_seconds`` (the schedule's ``created_at`` is its first due time;
``k`` is the grid point at or just before ``taken_at``). The kernel keeps no fire-error figure of
its own, so this is read from outside, through the API only: the schedules' ``created_at`` and
the snapshots' ``taken_at`` (both to the microsecond). A grid point in the window without a
snapshot is a *missed* fire (skipped because the previous fire of that schedule still ran,
failed, or never taken up); the kernel's own counters (``GET /system``) give fires, failures and
skips over the same window.

**Setup, and why.** The target (issue 6: p99 under 100 ms) is about the scheduler: when a fire
starts, not how long a grab takes. 500 cameras grabbing live every 5-10 s would be 50-100 ffmpeg
starts a second, far past what two cores can do; the result would measure an overloaded machine,
and each fire's grab runs after ``taken_at`` anyway. So the fires here take sampler frames, the
scheduler's cheap path, which still does the whole fire (camera lookup, JPEG written to disk,
snapshot row, result recorded) at the full rate: ``--cameras`` cameras (10 by default) on one
small RTSP test source (640x360, 15 fps, keyframe every second) each run a 1 fps, 320-wide
sampler, and the 500 schedules are spread over them round robin with intervals of 5, 6, ..., 10 s
(about 67 fires a second). Every fire whose camera had no frame younger than 2 s falls back to a
grab; the table shows how many did.

**Timeline.** Start camera and kernel, start samplers and wait for frames, create the schedules
through the API (each fires at once), wait ``WARM_UP_S`` (longer than any interval, so every
schedule is on its steady grid), then measure the grid points due in a ``--duration`` window.
Usage::

    .venv/bin/python -m benchmarks.scheduler_punctuality [--schedules 500] [--duration 75]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.kernel import BenchKernel, Source, kernel_session, percentile
from benchmarks.machine import write_result

SOURCE = Source("h264-360p-gop15", "h264", 640, 360, 15, 15, 800)
SAMPLER_FPS = 1.0
SAMPLER_WIDTH = 320
MIN_INTERVAL_S, MAX_INTERVAL_S = 5, 10
# Longer than the longest interval: every schedule has left its creation burst behind.
WARM_UP_S = 12.0
# After the window: fires due in it have been taken up and stored (sampler frames: milliseconds).
SETTLE_S = 5.0
# The scheduler fires up to 2 ms before a due time (asyncio timers are ~1 ms coarse).
EARLY_TOLERANCE_S = 0.01
MAX_SNAPSHOTS_PER_QUERY = 10_000
P99_TARGET_MS = 100.0
# Fire errors past these are counted, to show how thin the tail is.
LATE_THRESHOLDS_MS = (10.0, 50.0, 100.0)
MS_PER_S = 1000.0
TABLE_HEADER = (
    "| due | fired | missed | fire error p50 / p99 / max ms | fire to stored p50 / p99 ms "
    "| sources | kernel fires / failed / skipped |"
)


@dataclass(frozen=True)
class Planned:
    schedule_id: str
    camera_id: str
    interval_s: int
    first_due: datetime  # the schedule's created_at


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def create_schedules(kernel: BenchKernel, camera_ids: list[str], count: int) -> list[Planned]:
    planned = []
    span = MAX_INTERVAL_S - MIN_INTERVAL_S + 1
    for n in range(count):
        camera_id = camera_ids[n % len(camera_ids)]
        interval_s = MIN_INTERVAL_S + n % span
        response = kernel.api.post(
            f"/cameras/{camera_id}/snapshot-schedules", json={"interval_seconds": interval_s}
        )
        if response.status_code != 201:
            raise RuntimeError(f"creating a schedule: {response.status_code} {response.text}")
        body = response.json()
        planned.append(Planned(body["id"], camera_id, interval_s, parse_time(body["created_at"])))
    return planned


def grid_points(plan: Planned, start: datetime, end: datetime) -> int:
    """How many of the schedule's due times lie in ``[start, end)``."""
    interval = timedelta(seconds=plan.interval_s)
    first = max(0, math.ceil((start - plan.first_due) / interval))
    last = math.ceil((end - plan.first_due) / interval)  # exclusive
    return max(0, last - first)


def fire_errors(
    kernel: BenchKernel, plans: list[Planned], start: datetime, end: datetime
) -> tuple[list[float], list[float], Counter[str]]:
    """Fire-time errors (s) and fire-to-stored times (s) of the fires due in ``[start, end)``."""
    by_id = {p.schedule_id: p for p in plans}
    errors: list[float] = []
    stored_after: list[float] = []
    sources: Counter[str] = Counter()
    for camera_id in sorted({p.camera_id for p in plans}):
        params = {
            "from": start.isoformat(),
            "to": (end + timedelta(seconds=MAX_INTERVAL_S)).isoformat(),
            "limit": MAX_SNAPSHOTS_PER_QUERY,
        }
        response = kernel.api.get(f"/cameras/{camera_id}/snapshots", params=params)
        if response.status_code != 200:
            raise RuntimeError(f"listing snapshots: {response.status_code} {response.text}")
        for snapshot in response.json():
            plan = by_id.get(snapshot["schedule_id"])
            if plan is None:
                continue
            taken = parse_time(snapshot["taken_at"])
            interval = timedelta(seconds=plan.interval_s)
            k = math.floor(
                (taken - plan.first_due + timedelta(seconds=EARLY_TOLERANCE_S)) / interval
            )
            due = plan.first_due + k * interval
            if not start <= due < end:
                continue
            errors.append((taken - due).total_seconds())
            stored_after.append((parse_time(snapshot["created_at"]) - taken).total_seconds())
            sources[snapshot["source"]] += 1
    return errors, stored_after, sources


def scheduler_counters(kernel: BenchKernel) -> dict[str, int]:
    snapshots = kernel.system()["snapshots"]
    return {
        "fires": snapshots["schedule_fires_total"],
        "failures": snapshots["schedule_failures_total"],
        "skipped": snapshots["schedule_skipped_total"],
    }


def run(cameras: int, schedules: int, duration_s: float) -> dict[str, Any]:
    env = {"HELDAR_AI_MAX_TOTAL_FPS": str(max(40, math.ceil(cameras * SAMPLER_FPS)))}
    with kernel_session(SOURCE, env=env) as kernel:
        camera_ids = kernel.add_cameras(cameras)
        kernel.add_ai_tasks(camera_ids, fps=SAMPLER_FPS, width=SAMPLER_WIDTH)
        kernel.wait_sampling(camera_ids)
        started = time.monotonic()
        plans = create_schedules(kernel, camera_ids, schedules)
        creation_s = time.monotonic() - started
        print(f"created {schedules} schedules in {creation_s:.1f} s", flush=True)
        time.sleep(WARM_UP_S)  # benchmark pacing, not synchronisation
        before = scheduler_counters(kernel)
        window_start = datetime.now(UTC)
        time.sleep(duration_s)  # the measured window
        window_end = datetime.now(UTC)
        after = scheduler_counters(kernel)
        time.sleep(SETTLE_S)  # fires due near the end are stored
        errors, stored_after, sources = fire_errors(kernel, plans, window_start, window_end)
    expected = sum(grid_points(p, window_start, window_end) for p in plans)
    errors_ms = [e * MS_PER_S for e in errors]
    stored_ms = [s * MS_PER_S for s in stored_after]
    return {
        "cameras": cameras,
        "schedules": schedules,
        "duration_s": duration_s,
        "creation_s": creation_s,
        "due_in_window": expected,
        "fires_observed": len(errors),
        "missed": expected - len(errors),
        "sources": dict(sources),
        "counters_in_window": {k: after[k] - before[k] for k in after},
        "fire_error_ms": {
            "p50": percentile(errors_ms, 50),
            "p99": percentile(errors_ms, 99),
            "max": max(errors_ms, default=math.nan),
            "min": min(errors_ms, default=math.nan),
            "late": {f"over_{t:g}": sum(e > t for e in errors_ms) for t in LATE_THRESHOLDS_MS},
        },
        "fire_to_stored_ms": {
            "p50": percentile(stored_ms, 50),
            "p99": percentile(stored_ms, 99),
            "max": max(stored_ms, default=math.nan),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=500)
    parser.add_argument("--cameras", type=int, default=10)
    parser.add_argument("--duration", type=float, default=75.0, help="seconds measured")
    args = parser.parse_args()
    result = run(args.cameras, args.schedules, args.duration)
    err, stored = result["fire_error_ms"], result["fire_to_stored_ms"]
    counters = result["counters_in_window"]
    met = err["p99"] < P99_TARGET_MS and result["missed"] == 0
    print(
        f"{result['schedules']} schedules on {result['cameras']} cameras, "
        f"{result['duration_s']:g} s window"
    )
    print(TABLE_HEADER)
    print("|---|---|---|---|---|---|---|")
    sources = ", ".join(f"{k} {v}" for k, v in sorted(result["sources"].items()))
    print(
        f"| {result['due_in_window']} | {result['fires_observed']} | {result['missed']} | "
        f"{err['p50']:.1f} / {err['p99']:.1f} / {err['max']:.1f} | "
        f"{stored['p50']:.1f} / {stored['p99']:.1f} | {sources} | "
        f"{counters['fires']} / {counters['failures']} / {counters['skipped']} |"
    )
    late = ", ".join(f"{v} {k.replace('_', ' ')} ms" for k, v in err["late"].items())
    print(f"fires late: {late}")
    print(
        f"fire error p99 target < {P99_TARGET_MS:g} ms, none missed: {'met' if met else 'MISSED'}"
    )
    path = write_result("scheduler_punctuality", {**result, "target_met": met})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

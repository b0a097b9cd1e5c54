"""What a worker did, per task: readable while it runs, logged when it stops."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# Memory per task for tests and diagnostics: frame ids of the latest answered posts
# (duplicates included, so a test can check that no frame was posted twice).
POSTED_FRAME_IDS_KEPT = 1000


@dataclass(slots=True)
class TaskCounters:
    frames_analysed: int = 0
    posts: int = 0  # accepted, not duplicate
    duplicates: int = 0  # the kernel already had this frame_id
    detections_ingested: int = 0
    unticketed: int = 0  # posted with a ticket the kernel did not accept as one
    posts_dropped: int = 0  # gave up after MAX_POST_ATTEMPTS transient failures
    errors: int = 0  # 4xx answers, undecodable frames, bad config
    posted_frame_ids: deque[str] = field(
        default_factory=lambda: deque(maxlen=POSTED_FRAME_IDS_KEPT)
    )


@dataclass(slots=True)
class WorkerCounters:
    """Readable while the worker runs; per task id, kept after the task stops."""

    tasks: dict[str, TaskCounters] = field(default_factory=dict)
    lease_calls: int = 0
    lease_failures: int = 0

    def task(self, task_id: str) -> TaskCounters:
        return self.tasks.setdefault(task_id, TaskCounters())

    def totals(self) -> dict[str, int]:
        names = ("frames_analysed", "posts", "duplicates", "unticketed", "posts_dropped", "errors")
        totals = {name: sum(getattr(c, name) for c in self.tasks.values()) for name in names}
        totals["lease_failures"] = self.lease_failures
        return totals

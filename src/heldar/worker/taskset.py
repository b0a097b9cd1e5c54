"""The held task set against a lease's task list: what to start, stop, restart (pure).

The lease's ``tasks`` is the complete set a worker holds now. :func:`plan_tasks` turns the
difference into a :class:`TaskPlan`; the runner carries it out. Invariant: after applying a
plan, the held ids are exactly the leased ids, and every held task's record is the leased one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from heldar.worker.client import TaskSpec


@dataclass(frozen=True, slots=True)
class TaskPlan:
    start: tuple[TaskSpec, ...]  # leased, not held
    stop: tuple[str, ...]  # held, not leased (ids)
    restart: tuple[TaskSpec, ...]  # held, but what is analysed changed: new analyser
    keep: tuple[TaskSpec, ...]  # held and unchanged (fps/width may differ: record only)

    @property
    def changed(self) -> bool:
        return bool(self.start or self.stop or self.restart)


def needs_restart(held: TaskSpec, leased: TaskSpec) -> bool:
    """A new analyser is needed when what is analysed, or how, changed; not for fps/width."""
    return (
        held.camera_id != leased.camera_id
        or held.task_type != leased.task_type
        or held.stream_profile != leased.stream_profile
        or held.frame_url != leased.frame_url
        or held.config != leased.config
    )


def plan_tasks(held: Mapping[str, TaskSpec], leased: Sequence[TaskSpec]) -> TaskPlan:
    """What to do so the held tasks become exactly ``leased`` (a repeated id: the last wins)."""
    wanted = {task.id: task for task in leased}
    restart: list[TaskSpec] = []
    keep: list[TaskSpec] = []
    for task_id, task in wanted.items():
        if task_id in held:
            (restart if needs_restart(held[task_id], task) else keep).append(task)
    return TaskPlan(
        start=tuple(task for task_id, task in wanted.items() if task_id not in held),
        stop=tuple(task_id for task_id in held if task_id not in wanted),
        restart=tuple(restart),
        keep=tuple(keep),
    )

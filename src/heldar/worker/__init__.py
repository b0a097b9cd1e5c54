"""The reference AI worker: leases tasks from a kernel, analyses frames, posts detections.

Run it as ``heldar worker --api URL`` or ``python -m heldar.worker --api URL``. Modules:
``analysers`` (motion, person; numpy/OpenCV from the ``worker`` extra, imported on first use),
``client`` (the HTTP calls of the worker protocol, typed outcomes), ``taskset`` (the lease's
task list against the held tasks, pure), ``counters`` and ``runner`` (the :class:`Worker`:
lease loop and one loop per held task under one TaskGroup).
"""

from heldar.worker.analysers import ANALYSERS, Analyser, Detection
from heldar.worker.counters import TaskCounters, WorkerCounters
from heldar.worker.runner import Worker, run_until_signalled

__all__ = [
    "ANALYSERS",
    "Analyser",
    "Detection",
    "TaskCounters",
    "Worker",
    "WorkerCounters",
    "run_until_signalled",
]

"""CPU and memory of groups of processes over a measurement window, and of the whole machine.

A :class:`UsageMeter` is given named groups, each a function that lists the group's pids when
called (a kernel's process tree changes as samplers restart). ``start()`` and ``stop()`` read
every group's user + system CPU time (psutil) and ``/proc/stat``; a group's CPU is the sum of the
deltas of the processes present at both ends, so a process that started or ended inside the
window is left out, and counted in ``churned``. Memory is each group's PSS at the end (RSS where
PSS is not readable): PSS shares the pages of a common binary fairly, so it adds up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

MB = 1e6

Pids = Callable[[], Iterable[int]]


@dataclass(frozen=True)
class Usage:
    """CPU in cores (1.0 = one core busy for the whole window); memory in MB at its end."""

    cores: dict[str, float]  # per group
    memory_mb: dict[str, float]  # per group
    processes: dict[str, int]  # per group, at the end
    churned: dict[str, int]  # per group: processes that started or ended within the window
    machine_busy_pct: float  # every process on the machine; 100 = all cores busy
    window_s: float


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants; empty once it is gone."""
    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return []


def children(pid: int) -> list[int]:
    """All descendants of ``pid``, not ``pid`` itself."""
    return process_tree(pid)[1:]


def this_process() -> list[int]:
    return [os.getpid()]


def _cpu_s(pids: Iterable[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[pid] = times.user + times.system
    return out


def _memory_mb(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            try:
                total += proc.memory_full_info().pss
            except (psutil.AccessDenied, AttributeError):
                total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / MB


def _busy_total_s(times: Any) -> tuple[float, float]:
    total = sum(times)
    return total - times.idle - getattr(times, "iowait", 0.0), total


class UsageMeter:
    def __init__(self, groups: Mapping[str, Pids]) -> None:
        self._groups = dict(groups)
        self._before: dict[str, dict[int, float]] = {}
        self._machine_before = (0.0, 0.0)
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self._machine_before = _busy_total_s(psutil.cpu_times())
        self._before = {name: _cpu_s(pids()) for name, pids in self._groups.items()}

    def stop(self) -> Usage:
        after = {name: _cpu_s(pids()) for name, pids in self._groups.items()}
        busy, total = _busy_total_s(psutil.cpu_times())
        window_s = time.monotonic() - self._started
        busy0, total0 = self._machine_before
        cores, memory, count, churned = {}, {}, {}, {}
        for name, now in after.items():
            then = self._before[name]
            both = now.keys() & then.keys()
            cores[name] = sum(now[p] - then[p] for p in both) / window_s
            memory[name] = _memory_mb(now)
            count[name] = len(now)
            churned[name] = len(now.keys() ^ then.keys())
        return Usage(
            cores=cores,
            memory_mb=memory,
            processes=count,
            churned=churned,
            machine_busy_pct=100 * (busy - busy0) / max(total - total0, 1e-9),
            window_s=window_s,
        )

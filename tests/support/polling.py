"""Waiting on real processes in tests: polls with deadlines, never sleeps as synchronisation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# How often a deadline loop looks again; short against every deadline it serves.
POLL_S = 0.05


async def eventually(
    predicate: Callable[[], Awaitable[T | None]],
    timeout_s: float,
    what: str = "the condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy, return that; fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:g} s (last: {value!r})")
        await asyncio.sleep(POLL_S)  # poll interval of a deadline loop


async def throughout(
    predicate: Callable[[], Awaitable[bool]], duration_s: float, what: str
) -> None:
    """Check ``predicate`` at every poll for ``duration_s``: for things that must NOT happen."""
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        assert await predicate(), what
        await asyncio.sleep(POLL_S)  # poll interval of a deadline loop

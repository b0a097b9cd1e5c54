"""The media-job limit (SPEC §2 ``HELDAR_MEDIA_JOB_CONCURRENCY``): one-shot ffmpeg work.

Live grabs, scheduled grabs and time-lapse exports each hold one slot while their ffmpeg
runs. Requests from a user do not queue: past the limit they get :class:`~heldar.errors.Busy`
(HTTP 503 + ``Retry-After``) at once. Background work (schedule fires) may wait for a slot,
up to a deadline of its own.

Samplers are not media jobs: the decoder cap and the fps budget bound them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from heldar.errors import Busy

# What a refused client is told to wait: one-shot grabs of a live stream take 1-3 s.
BUSY_RETRY_AFTER_S = 2


class MediaJobs:
    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._limit = concurrency
        self._semaphore = asyncio.Semaphore(concurrency)
        self._running = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def running(self) -> int:
        return self._running

    @contextlib.asynccontextmanager
    async def slot_now(self, what: str) -> AsyncIterator[None]:
        """Hold a slot for ``what``, or raise Busy at once when all are taken."""
        if self._semaphore.locked():
            raise Busy(
                f"{what}: all {self._limit} media job slots are busy "
                "(HELDAR_MEDIA_JOB_CONCURRENCY); retry shortly",
                retry_after_s=BUSY_RETRY_AFTER_S,
            )
        await self._semaphore.acquire()  # free, so this does not wait
        async with self._held():
            yield

    @contextlib.asynccontextmanager
    async def slot(self, what: str, timeout_s: float) -> AsyncIterator[None]:
        """Hold a slot for ``what``, waiting up to ``timeout_s`` for one (else Busy)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._semaphore.acquire()
        except TimeoutError:
            raise Busy(
                f"{what}: no media job slot became free within {timeout_s:g} s "
                "(HELDAR_MEDIA_JOB_CONCURRENCY)",
                retry_after_s=BUSY_RETRY_AFTER_S,
            ) from None
        async with self._held():
            yield

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[None]:
        """Account for a slot already acquired, and release it on the way out."""
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._semaphore.release()

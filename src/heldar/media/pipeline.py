"""A receiver feeding a decoder through a pipe: two ffmpeg children, or the kernel's keyframe feed
and one ffmpeg (:class:`FeedPipeline`).

The keyframe sampler uses it (see :mod:`heldar.services.sampler`): the receiver reads the camera
and stream-copies only the packets worth decoding into the pipe, the decoder turns them into
JPEGs on its stdout. ffmpeg 5.1 cannot filter packets before its own decoder, so this is how
non-key packets never reach a decoder at all.

It offers what the sampler uses of :class:`~heldar.media.process.FfmpegProcess` (``stdout``,
``pid``, ``stop``, ``stderr_tail``, ``failure_reason``) and keeps its invariants for both
children: each in its own process group, both always stopped and reaped, stderr redacted and
bounded. Either child ending ends the other: the decoder sees EOF when the receiver exits, the
receiver a broken pipe when the decoder exits. ``stop`` stops both together.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Self

from heldar.media.feed import FeedHub, KeyframeFeed
from heldar.media.process import DEFAULT_STOP_GRACE_S, FfmpegProcess


class FfmpegPipeline:
    """``receiver | decoder``; create it with :meth:`start`, end it with :meth:`stop`."""

    def __init__(self, receiver: FfmpegProcess, decoder: FfmpegProcess) -> None:
        """Internal: use :meth:`start`."""
        self.receiver = receiver
        self.decoder = decoder

    @classmethod
    async def start(
        cls,
        receiver_argv: Sequence[str],
        decoder_argv: Sequence[str],
        *,
        label: str,
        receiver_stderr_hook: Callable[[str], str | None] | None = None,
        nice: int = 0,
    ) -> Self:
        """Spawn both (``nice``: see ``FfmpegProcess.start``); raises
        :class:`~heldar.errors.Unavailable` like ``FfmpegProcess.start``."""
        read_fd, write_fd = os.pipe()
        try:
            decoder = await FfmpegProcess.start(
                decoder_argv, label=f"{label} decoder", stdin_fd=read_fd, nice=nice
            )
            try:
                receiver = await FfmpegProcess.start(
                    receiver_argv,
                    label=f"{label} receiver",
                    stdout_fd=write_fd,
                    stderr_line_hook=receiver_stderr_hook,
                    nice=nice,
                )
            except BaseException:
                await decoder.stop()
                raise
        finally:  # the children hold their own ends; ours would keep EOF from ever coming
            os.close(read_fd)
            os.close(write_fd)
        return cls(receiver, decoder)

    @property
    def pid(self) -> int:
        """The decoder's pid (the process that delivers frames)."""
        return self.decoder.pid

    @property
    def pids(self) -> tuple[int, int]:
        return self.receiver.pid, self.decoder.pid

    @property
    def stdout(self) -> asyncio.StreamReader:
        return self.decoder.stdout

    def stderr_tail(self) -> str:
        """Both tails, the receiver's first; each at most its own limit."""
        parts = (self.receiver.stderr_tail(), self.decoder.stderr_tail())
        return "\n".join(part for part in parts if part)

    def failure_reason(self) -> str:
        """The receiver's reason when it said anything (a camera problem ends the decoder too,
        with nothing to say), else the decoder's."""
        if self.receiver.stderr_tail().strip():
            return self.receiver.failure_reason()
        return self.decoder.failure_reason()

    async def stop(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> int:
        """Stop both together; the decoder's returncode. Each child's cleanup runs to the end
        even if the caller is cancelled (see ``FfmpegProcess.stop``)."""
        stops = (self.receiver.stop(grace_s), self.decoder.stop(grace_s))
        _, returncode = await asyncio.gather(*stops)
        return returncode


class FeedPipeline:
    """``keyframe feed | decoder``: the kernel's own RTSP receiving (:mod:`heldar.media.feed`)
    feeding one ffmpeg decoder, with the interface of :class:`FfmpegPipeline`.

    The feed owns the pipe's write end: a feed that ends closes it and the decoder sees EOF; a
    decoder that exits makes the feed's next write fail. ``stop`` ends both.
    """

    def __init__(self, hub: FeedHub, feed: KeyframeFeed, decoder: FfmpegProcess) -> None:
        """Internal: use :meth:`start`."""
        self._hub = hub
        self.feed = feed
        self.decoder = decoder

    @classmethod
    async def start(
        cls,
        hub: FeedHub,
        feed: KeyframeFeed,
        decoder_argv: Sequence[str],
        *,
        label: str,
        nice: int = 0,
    ) -> Self:
        """Spawn the decoder on a new pipe and start the feed on it; on failure the feed is
        closed and :class:`~heldar.errors.Unavailable` raised, like ``FfmpegProcess.start``."""
        read_fd, write_fd = os.pipe()
        try:
            decoder = await FfmpegProcess.start(
                decoder_argv, label=f"{label} decoder", stdin_fd=read_fd, nice=nice
            )
        except BaseException:
            os.close(write_fd)
            feed.close()
            raise
        finally:
            os.close(read_fd)
        hub.start(feed, write_fd)
        return cls(hub, feed, decoder)

    @property
    def pid(self) -> int:
        return self.decoder.pid

    @property
    def pids(self) -> tuple[int]:
        return (self.decoder.pid,)

    @property
    def stdout(self) -> asyncio.StreamReader:
        return self.decoder.stdout

    def stderr_tail(self) -> str:
        return self.decoder.stderr_tail()

    def failure_reason(self) -> str:
        """Why the feed ended, when it did (the decoder's EOF follows from it), else the
        decoder's reason."""
        if self.feed.failure is not None:
            return self.feed.failure
        return self.decoder.failure_reason()

    async def stop(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> int:
        """End the feed (EOF for the decoder), then stop the decoder."""
        self._hub.stop(self.feed)
        return await self.decoder.stop(grace_s)

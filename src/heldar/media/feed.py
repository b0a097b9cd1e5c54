"""Keyframe feeds: the kernel receives RTSP for keyframe samplers itself, all cameras in one loop.

A keyframe sampler on RTSP needs from the stream only the keyframes it outputs; receiving the rest
is most of its cost (benchmarks/README.md). ffmpeg's RTSP demuxer, one process per camera, wakes
for every few packets and makes a ``poll`` and a ``recvfrom`` per packet: about 3.9 ms of CPU a
second for a 2 Mbit/s camera, cold caches every time. A :class:`FeedHub` instead serves every
keyframe sampler from one task that wakes every ``BATCH_S``, reads whatever each socket holds and
parses it with warm code: about 1 ms a second per camera. Each :class:`KeyframeFeed` writes only
the keyframes its sampler will output (:class:`KeyframePicker`) into a pipe to that sampler's
own decoder, led by the parameter sets and followed by an access unit delimiter (Annex B), so
the decoder decodes exactly the frames it outputs, each as soon as it is complete.

Crash isolation stays where crashes happen: decoding, in an ffmpeg child per sampler. The feed
is pure Python (no native parser); a malformed stream or a bug fails that feed alone, and its
sampler restarts like after any receiver failure. Connecting (``OPTIONS`` to ``PLAY``) uses
blocking sockets in a small thread pool, so a slow camera never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from heldar.media.keyframes import FrameSize
from heldar.media.nal import (
    ACCESS_UNIT_DELIMITERS,
    AccessUnit,
    AccessUnitAssembler,
    Codec,
    frame_size,
)
from heldar.media.rtsp import RtspError, RtspSession, VideoTrack, rtp_packet

log = logging.getLogger(__name__)

# The longest a packet waits in the socket before the hub reads it: reading every packet as it
# comes (ffmpeg's way) costs two system calls and a wake-up per packet. A keyframe reaches its
# decoder at most this much later.
BATCH_S = 0.05
# Connecting is blocking I/O (a few round trips): this many cameras connect at once.
CONNECT_THREADS = 8
# Reads of one socket in one round at most: a camera sending faster than the round parses cannot
# hold the others up (its socket keeps the rest for the next round).
MAX_READS_PER_ROUND = 8
# A keyframe may come this share of the output interval early and still be output (keyframes
# one interval apart with a little timestamp jitter must all pass, not every other one).
EARLY_SHARE = 0.25
_TIMESTAMP_BITS = 32


@dataclass(slots=True)
class KeyframePicker:
    """Which keyframes to output so that at most ``fps`` frames a second come out.

    A keyframe is taken when it is at most ``EARLY_SHARE`` of an interval before the next due
    time, and the due time then moves one interval on (from the keyframe, less the early share,
    if that is later). So any ``n`` steps between output frames span at least ``n`` intervals
    less ``2 * EARLY_SHARE`` of one: the rate never exceeds ``fps`` beyond that slack. And
    keyframes one interval apart, with jitter under ``EARLY_SHARE / 2`` of it, all pass (a fixed
    grid of cells would drop every other one whenever the jitter straddles a cell edge). After a
    pause the due time starts again from the keyframe taken (no burst to catch up); a timestamp
    that goes backwards (a camera restart) starts afresh.
    """

    fps: float
    _due_s: float | None = None
    _last_s: float | None = None

    def take(self, time_s: float) -> bool:
        interval_s = 1.0 / self.fps
        early_s = EARLY_SHARE * interval_s
        if self._due_s is None or self._last_s is None or time_s < self._last_s:
            self._due_s = time_s + interval_s
        elif time_s >= self._due_s - early_s:
            self._due_s = max(self._due_s + interval_s, time_s + interval_s - early_s)
        else:
            return False
        self._last_s = time_s
        return True


class TimestampUnwrapper:
    """32-bit RTP timestamps to a continuous count from the first one."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._count = 0

    def __call__(self, timestamp: int) -> int:
        if self._last is None:
            self._last = timestamp
        span = 1 << _TIMESTAMP_BITS
        delta = (timestamp - self._last) % span
        if delta >= span // 2:  # a step backwards (reordering or a reset), not a wrap
            delta -= span
        self._count += delta
        self._last = timestamp
        return self._count


class FeedFailed(Exception):
    """A feed ended; the message says why (never the credentials)."""


class KeyframeFeed:
    """One camera's RTSP session feeding one decoder's stdin. Driven by :class:`FeedHub`."""

    def __init__(
        self,
        session: RtspSession,
        track: VideoTrack,
        fps: float,
        *,
        timeout_s: float,
        on_keyframe: Callable[[float], None],
        on_size: Callable[[FrameSize], None],
    ) -> None:
        self.session = session
        self.track = track
        self._assembler = AccessUnitAssembler(track.codec, track.parameter_sets)
        self._picker = KeyframePicker(fps)
        self._unwrap = TimestampUnwrapper()
        self._delimiter = ACCESS_UNIT_DELIMITERS[track.codec]
        self._timeout_s = timeout_s
        self._on_keyframe = on_keyframe
        self._on_size = on_size
        self._size_told = False
        self._out_fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unwritten = b""  # the rest of a keyframe the pipe had no room for
        self._waiting_to_write = False
        self._write_error: OSError | None = None
        now = time.monotonic()
        self._data_at = now
        self._keepalive_at = now + session.keepalive_s
        self.keyframes_total = 0
        self.keyframes_written = 0
        self.keyframes_dropped = 0  # picked, but the decoder was still busy with earlier ones
        self.failure: str | None = None  # why it ended, once it has

    @property
    def codec(self) -> Codec:
        return self.track.codec

    def attach(self, out_fd: int) -> None:
        """Start writing to ``out_fd`` (the feed owns and closes it); in the event loop."""
        os.set_blocking(out_fd, False)
        self._loop = asyncio.get_running_loop()
        self._out_fd = out_fd
        self._tell_size()

    def pump(self, now: float) -> None:
        """Read what the socket holds, pass the keyframes on; raises :class:`FeedFailed`."""
        try:
            if self._write_error is not None:
                raise self._write_error
            received = False
            for _ in range(MAX_READS_PER_ROUND):
                data = self.session.receive_available()
                if data is None:
                    break
                received = True
                self._parse(data)
            if received:
                self._data_at = now
            elif now - self._data_at > self._timeout_s:
                raise FeedFailed(f"no data from the camera for {self._timeout_s:g} s")
            if now >= self._keepalive_at:
                self.session.keepalive()
                self._keepalive_at = now + self.session.keepalive_s
        except RtspError as exc:
            raise FeedFailed(str(exc)) from None
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise FeedFailed("the decoder closed its input") from None
            raise FeedFailed(exc.strerror or str(exc)) from None

    def close(self, reason: str | None = None) -> None:
        if self.failure is None:
            self.failure = reason
        self.session.close()
        if self._out_fd is not None:
            self._stop_waiting_to_write()
            os.close(self._out_fd)
            self._out_fd = None

    def _parse(self, data: bytes) -> None:
        channel = self.session.rtp_channel
        for packet_channel, raw in self.session.packets(data):
            if packet_channel != channel:
                continue
            packet = rtp_packet(raw)
            if packet is None:
                continue
            unit = self._assembler.push(
                packet.payload, packet.sequence, packet.timestamp, packet.marker
            )
            if unit is not None:
                self._keyframe(unit)

    def _keyframe(self, unit: AccessUnit) -> None:
        self.keyframes_total += 1
        time_s = self._unwrap(unit.timestamp) / self.track.clock_rate
        self._tell_size()
        self._on_keyframe(time_s)
        if not self._picker.take(time_s):
            return
        if self._unwritten:
            # The decoder is still taking the last one: drop this one rather than queue (a
            # queue behind a slow decoder only grows, and its frames only age).
            self.keyframes_dropped += 1
            return
        self._unwritten = unit.annex_b(self._assembler.ordered_parameter_sets()) + self._delimiter
        self.keyframes_written += 1
        self._write()

    def _write(self) -> None:
        """Write what the pipe takes; the rest as soon as it has room (the loop watches it)."""
        if not self._unwritten or self._out_fd is None:
            return
        try:
            written = os.write(self._out_fd, self._unwritten)
        except BlockingIOError:
            written = 0
        except OSError as exc:  # the decoder is gone: the next round ends the feed with it
            self._write_error = exc
            self._unwritten = b""
        else:
            self._unwritten = self._unwritten[written:]
        if self._unwritten and not self._waiting_to_write:
            assert self._loop is not None
            self._loop.add_writer(self._out_fd, self._write)
            self._waiting_to_write = True
        elif not self._unwritten:
            self._stop_waiting_to_write()

    def _stop_waiting_to_write(self) -> None:
        if self._waiting_to_write and self._loop is not None and self._out_fd is not None:
            self._loop.remove_writer(self._out_fd)
        self._waiting_to_write = False

    def _tell_size(self) -> None:
        sps = self._assembler.sequence_parameter_set
        if self._size_told or sps is None:
            return
        try:
            width, height = frame_size(self.codec, sps)
        except ValueError:
            return
        self._size_told = True
        self._on_size(FrameSize(width, height))


class FeedHub:
    """Owns every keyframe feed and the one task that pumps them; run it with :meth:`run`."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._feeds: set[KeyframeFeed] = set()
        self._any_feed = asyncio.Event()  # set while there is a feed: an idle hub sleeps
        self._executor: ThreadPoolExecutor | None = None

    async def connect(
        self,
        url: str,
        fps: float,
        *,
        on_keyframe: Callable[[float], None],
        on_size: Callable[[FrameSize], None],
    ) -> KeyframeFeed:
        """Open an RTSP session and play it; raises :class:`~heldar.media.rtsp.RtspError`
        (:class:`~heldar.media.rtsp.UnsupportedStream` for a stream it cannot take)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(CONNECT_THREADS, thread_name_prefix="rtsp")
        session = RtspSession(url, self._timeout_s)
        opening = asyncio.get_running_loop().run_in_executor(self._executor, session.open)
        try:
            track = await opening
        except asyncio.CancelledError:
            opening.add_done_callback(lambda _: session.close())
            raise
        except BaseException:
            session.close()
            raise
        session.set_nonblocking()
        return KeyframeFeed(
            session,
            track,
            fps,
            timeout_s=self._timeout_s,
            on_keyframe=on_keyframe,
            on_size=on_size,
        )

    def start(self, feed: KeyframeFeed, out_fd: int) -> None:
        """Feed ``out_fd`` (now owned by the feed) from the next round on."""
        feed.attach(out_fd)
        self._feeds.add(feed)
        self._any_feed.set()

    def stop(self, feed: KeyframeFeed, reason: str | None = None) -> None:
        """Drop ``feed`` from the rounds and close it (``reason``: why, if it failed)."""
        self._feeds.discard(feed)
        feed.close(reason)

    def pump_all(self, now: float) -> None:
        """One round over every feed; a failing feed is closed with its reason and dropped."""
        for feed in list(self._feeds):
            try:
                feed.pump(now)
            except FeedFailed as exc:
                self.stop(feed, str(exc))
            except Exception as exc:  # a bug must end this feed, not every camera's
                log.exception("keyframe feed of %s failed", feed.session.url)
                self.stop(feed, f"internal error: {type(exc).__name__}")

    async def run(self) -> None:
        """Pump every ``BATCH_S`` until cancelled; then close every feed."""
        try:
            while True:
                if not self._feeds:
                    self._any_feed.clear()
                    await self._any_feed.wait()
                self.pump_all(time.monotonic())
                await asyncio.sleep(BATCH_S)
        finally:
            for feed in list(self._feeds):
                self.stop(feed)
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None

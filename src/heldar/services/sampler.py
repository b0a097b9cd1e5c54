"""One AI frame sampler: the supervised decoder of one (camera, profile) (SPEC §5).

``Sampler.run()`` loops over ``run_once()`` with a fixed recovery rule:

- ``run_once`` spawns the decoder (:func:`build_argv`: TCP for RTSP, an I/O timeout, the
  granted rate, ``scale`` to the granted width without upscaling, JPEG on stdout): in keyframe
  mode on RTSP, a keyframe feed of the kernel's :class:`~heldar.media.feed.FeedHub` piping the
  keyframes to output into one decoder (:func:`feed_decoder_argv`; an ffmpeg receiver instead
  when the manager has no hub or the stream is neither H.264 nor H.265); a ``receiver |
  decoder`` pair of ffmpegs in keyframe mode otherwise and in full decode of GOP prefixes; else
  one ffmpeg. It splits stdout into frames and publishes each to the :class:`FrameStore`. No frame
  for ``stall_timeout_s(fps)`` is a stall: the processes are stopped and the run ends. A run
  that fails because one packet of probing did not tell the codec parameters makes the next
  run analyse longer, at once (:func:`longer_analysis_s`).
- Learning the stream: a run also logs keyframe packets (:mod:`heldar.media.keyframes`) and
  reports the keyframe interval and frame size to the manager, which may re-plan the mode or the
  decoder threads (a keyframe feed reports them itself, from RTP time and the SPS). A receiver
  always logs (a GOP that grows past the grid cell must switch keyframe mode to full decode); a
  lone full decode logs only until the stream is known (from this sampler or an earlier one of
  the same stream), because there the log costs about 10 %.
- After a run the sampler is ``offline`` (or ``stalled``) and waits ``backoff_delay_s``;
  the attempt counter resets after a run that delivered frames for ``HEALTHY_RUN_S``.
- ``error``: no usable URL or a missing file source is re-checked every ``BACKOFF_MAX_S``
  without spawning ffmpeg; a spawn failure retries on the normal backoff. Either way no
  crash loop.

Events are written on transitions only: ``sampler_offline`` when a sampler that was
sampling goes offline or stalls (with the redacted stderr tail), ``sampler_online`` when it
delivers frames again. The process is always stopped and reaped on exit or cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from heldar.clock import Clock
from heldar.config import DecodeMode, KeyframeReceiver
from heldar.errors import Unavailable
from heldar.media import ffmpeg
from heldar.media.feed import FeedHub
from heldar.media.jpeg import jpeg_dimensions, read_frames
from heldar.media.keyframes import (
    MAX_INTERVAL_S,
    MIN_INTERVAL_S,
    FrameSize,
    KeyframeIntervals,
    keyframe_log_args,
    stderr_filter,
)
from heldar.media.nal import Codec
from heldar.media.pipeline import FeedPipeline, FfmpegPipeline
from heldar.media.process import FfmpegProcess
from heldar.media.rtsp import RtspError, UnsupportedStream
from heldar.media.urls import StreamUrl
from heldar.services.budget import SamplerKey
from heldar.services.events import EventLog, Severity
from heldar.services.frames import FrameStore

log = logging.getLogger(__name__)

# SPEC §5 stall rule: no frame for max(10 s, 5 frame intervals).
MIN_STALL_TIMEOUT_S = 10.0
STALL_INTERVALS = 5
# SPEC §5 backoff: exponential 1 s .. 30 s with jitter; reset after 30 s of frames.
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
BACKOFF_JITTER = 0.2  # +-20 %, so cameras that fail together do not retry in lockstep
HEALTHY_RUN_S = 30.0
# ffmpeg exits promptly on SIGTERM when it only writes to a pipe.
STOP_GRACE_S = 2.0
# A keyframe interval this much off the known one is news (GOP changed), not jitter.
KEYFRAME_INTERVAL_CHANGE = 0.1
# Sampler processes run this much below the kernel's CPU priority: under overload the kernel's own
# work (receiving for every keyframe feed, the API, publishing frames) goes first, and decoders
# share what is left. Without it a decoder woken by a keyframe takes the CPU from the kernel in
# the middle of a round over all feeds, and every camera's keyframes wait.
SAMPLER_NICE = 5
# JPEG quality for mjpeg (2 best .. 31 worst); 5 keeps detail for detectors at ~1/3 the size of 2.
JPEG_QSCALE = 5
# The keyframe decoder reads NUT from the receiver, whose header carries the codec parameters:
# it needs no probing, and probing would hold the first frame back by several keyframes.
PIPE_PROBE_BYTES = 32
# RTSP is probed for one packet (ffmpeg.RTSP_PROBE_BYTES). Where that does not tell the codec
# parameters, the next run analyses this much of the stream, doubling up to the cap: enough to
# meet the in-band parameters of a long GOP, and no longer than needed for the usual ones.
FIRST_ANALYZE_S = 0.5
MAX_ANALYZE_S = 8.0
# How late, as a share of the keyframe gap, a keyframe may come before the GOP-prefix receiver
# misses a frame (gop_prefix_filter): timestamp jitter, not a changed GOP.
KEYFRAME_LATE_SHARE = 0.05


class SamplerState(StrEnum):
    CONNECTING = "connecting"
    SAMPLING = "sampling"
    STALLED = "stalled"
    OFFLINE = "offline"
    ERROR = "error"
    BUDGET_EXHAUSTED = "budget_exhausted"
    STOPPED = "stopped"


_DOWN_STATES = frozenset({SamplerState.OFFLINE, SamplerState.STALLED})


@dataclass(frozen=True, slots=True)
class SamplerSpec:
    """Everything that determines the ffmpeg command; a change means a restart."""

    key: SamplerKey
    url: StreamUrl | None
    fps: float
    width: int
    mode: DecodeMode = DecodeMode.ALL  # the effective mode: KEYFRAMES or ALL, never AUTO
    decode_threads: int = 1  # full decode's decoder threads; 0 lets ffmpeg choose
    # Full decode only: a receiver drops the end of each GOP that no output frame needs
    # (gop_prefix_filter); False: one ffmpeg decodes every frame.
    gop_prefix: bool = False


@dataclass(frozen=True, slots=True)
class SamplerCommand:
    """One ffmpeg (``decoder`` alone) or a pipeline ``receiver | decoder``."""

    decoder: list[str]
    receiver: list[str] | None = None


def stall_timeout_s(fps: float) -> float:
    return max(MIN_STALL_TIMEOUT_S, STALL_INTERVALS / fps)


def backoff_delay_s(attempt: int, rng: random.Random) -> float:
    """Delay before retry ``attempt`` (0-based): 1, 2, 4, ... capped at 30 s, with jitter."""
    base = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** min(attempt, 16))
    jittered = base * (1 + rng.uniform(-BACKOFF_JITTER, BACKOFF_JITTER))
    return float(min(BACKOFF_MAX_S, jittered))


def longer_analysis_s(analyze_s: float | None) -> float | None:
    """How long the next run analyses the stream after one that did not learn its codec
    parameters (``None``: one packet was probed); ``None`` once the cap was tried."""
    if analyze_s is None:
        return FIRST_ANALYZE_S
    if analyze_s >= MAX_ANALYZE_S:
        return None
    return min(MAX_ANALYZE_S, 2 * analyze_s)


def _grid_cell(fps: float) -> str:
    """The index of a timestamp's ``1/fps`` cell; ``{t}`` is the timestamp in seconds."""
    return f"floor({{t}}*{fps:g})"


def rate_filter(fps: float) -> str:
    """At most one frame per ``1/fps`` grid cell of the stream's own time, never a duplicate.

    Unlike ``fps=``, which makes a constant rate by duplicating frames when the input is slower
    (keyframes only, or a slow camera) and bursts duplicates at start, this passes the first frame
    of each cell and drops the rest: the average rate is ``fps`` when the input is faster, and the
    input's own rate when it is slower.
    """
    cell = _grid_cell(fps)
    now, before = cell.format(t="t"), cell.format(t="prev_selected_t")
    return f"select='isnan(prev_selected_t)+gt({now},{before})'"


def scale_filter(width: int) -> str:
    """Down to ``width`` (never up), full range for JPEG, plain ``yuv420p``.

    ``area`` averages the source pixels each output pixel covers: the right filter for shrinking
    (no aliasing of fine detail), and cheaper than swscale's default bicubic: 1.3 against 1.7 ms
    a frame from 720p, 2.0 against 2.9 ms from 1080p (to 640 wide, one thread, here).
    """
    return f"scale=w='min({width},iw)':h=-2:out_range=full:flags=area,format=yuv420p"


def keyframe_drop_filter(fps: float) -> str:
    """A bitstream filter that keeps the first keyframe packet of each ``1/fps`` grid cell.

    The same grid as :func:`rate_filter`, on packets: every non-key packet and every keyframe in
    an already served cell is dropped before any decoder sees it. The expression keeps its state
    in ``noise``'s registers: 1 = a keyframe was kept, 0 = the cell of the last kept one (a cell
    that differs, even backwards after a timestamp reset, is a new one). Commas are escaped for
    the bitstream-filter list.

    ffmpeg 5.1 tells the filter the input's time base but hands it packets in the output
    muxer's, and NUT keeps a time base only if it is at least 1/48000: exact for RTP video
    (always 90 kHz), too fine for some files (1/1000 becomes 1/64000, so every keyframe passes).
    The decoder therefore applies the same grid again (:func:`rate_filter`), on the receiver's
    own timestamps (``-copyts``: the grids must share their origin, or the second drops frames
    the first kept): the rate is right for every source, and only those sources decode more
    keyframes than they output.
    """
    cell = _grid_cell(fps).format(t="pts*tb")
    keep = f"key*(not(ld(1))+not(eq({cell},ld(0))))"
    expression = f"if({keep},st(1,1)*st(0,{cell})*0,1)"
    return "noise=drop=" + expression.replace(",", "\\,")


def gop_prefix_filter(fps: float) -> str:
    """A bitstream filter for full decode that drops the end of each GOP no output frame needs.

    The decoder outputs the first frame of each ``1/fps`` cell (:func:`rate_filter`). In the cell
    where the next keyframe is due, that keyframe can be the output, so the frames before it in
    that cell, and the rest of the cell before it once its first frame is kept, are needed by no
    output frame: a P-frame only serves frames up to the next keyframe. The filter predicts the
    next keyframe from the last two keyframe gaps (the longer, so an extra keyframe that a
    camera sends when a client connects does not shorten it) and drops those packets, from the
    first one up to the next keyframe. At a 2 s GOP the decoder gets about a third of the
    frames at 1 fps, 70 % at 2 fps, 93 % at 5 fps.

    Safe by construction: the decoder only ever gets a prefix of each GOP in decode order (the
    keyframe and the packets after it, up to a point), so it never decodes a frame whose
    reference was dropped. A wrong prediction can cost frames, never correctness: the keyframe
    is expected in the cell of ``due + KEYFRAME_LATE_SHARE * gap`` (an earlier one is fine), and
    a later one leaves the cells before it without a frame, until the gaps show the new GOP.
    Until two gaps are known, and after a timestamp jump, nothing is dropped.

    Registers: 0 = the cell of the last kept packet, 2 = the last keyframe's time, 3 = dropping
    until the next keyframe, 4 = a keyframe was seen, 5 and 6 = the last two keyframe gaps,
    7 = how many gaps are known in a row. The time base caveat of :func:`keyframe_drop_filter`
    applies: exact for RTP (90 kHz), so only RTSP sources use it.
    """
    t = "pts*tb"
    gap = f"({t}-ld(2))"
    cell = _grid_cell(fps).format(t=t)
    usable = f"ld(4)*gt({gap},{MIN_INTERVAL_S:g})*lt({gap},{MAX_INTERVAL_S:g})"
    keyframe = (
        f"if({usable},st(6,ld(5));st(5,{gap});st(7,ld(7)+1),st(7,0));"
        f"st(2,{t});st(3,0);st(4,1);st(0,{cell});0"
    )
    late = 1 + KEYFRAME_LATE_SHARE
    due = _grid_cell(fps).format(t=f"(ld(2)+max(ld(5),ld(6))*{late:g})")
    needless = f"gte(ld(7),2)*(gte({cell},{due})+eq({cell},{due}-1)*eq({cell},ld(0)))"
    other = f"if(ld(3),1,if({needless},st(3,1),st(0,{cell});0))"
    return "noise=drop=" + f"if(key,{keyframe},{other})".replace(",", "\\,")


def logs_keyframes(spec: SamplerSpec, *, stream_known: bool) -> bool:
    """Whether a run logs keyframe packets (:func:`keyframe_log_args`).

    A receiver always logs: its drops rely on the GOP (a GOP that grows past the grid cell must
    switch keyframe mode to full decode, a changed GOP must reach the GOP-prefix receiver), and
    the log costs a receiver nothing measurable. So does the ``-skip_frame`` fallback of keyframe
    mode. A lone full decode logs until the interval and the frame size are known (there the log
    costs about 10 %).
    """
    return spec.mode is DecodeMode.KEYFRAMES or spec.gop_prefix or not stream_known


def build_argv(
    ffmpeg_bin: str,
    spec: SamplerSpec,
    io_timeout_s: float,
    *,
    packet_drop: bool = True,
    log_keyframes: bool = True,
    analyze_s: float | None = None,
) -> SamplerCommand:
    """The sampler's command: the rate before the scaler, never upscale, JPEG to stdout.

    ``keyframes``: a receiver stream-copies only the keyframes that will be output
    (:func:`keyframe_drop_filter`) into a pipe, in NUT (which carries the timestamps), and a
    one-thread decoder reads them, so non-key packets never reach a decoder. ``all`` with
    ``spec.gop_prefix``: the same pipeline, whose receiver drops only the end of each GOP
    that no output frame needs (:func:`gop_prefix_filter`), and a decoder on
    ``spec.decode_threads``. ``all`` otherwise: one ffmpeg decodes every frame and keeps one per
    grid cell. Without ``packet_drop`` (ffmpeg before 5.1) there is no pipeline: keyframes fall
    back to one ffmpeg with ``-skip_frame nokey``, whose decoder still parses every packet.

    The filters and the JPEG encoder run on one thread each: a few small frames a second need no
    thread pools, whose wake-ups cost about 10 % of a full decode (benchmarks/README.md). One
    encoder thread also keeps frames fresh: a frame-threaded MJPEG encoder hands out each JPEG
    only when the next frame comes in, one output interval late (5 s at 0.2 fps).

    With ``log_keyframes`` the command also logs the keyframe packets
    (:func:`keyframe_log_args`): how the sampler learns the keyframe interval and the frame size.
    The stream copy behind the log costs about 10 % of a full decode (nothing measurable in a
    keyframe receiver), so full decode runs it only until the stream is known (see ``Sampler``).

    ``analyze_s``: see :func:`heldar.media.ffmpeg.input_args`.
    """
    assert spec.url is not None
    head = [ffmpeg_bin, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "warning",
            "-filter_threads", "1"]  # fmt: skip
    video_filter = f"{rate_filter(spec.fps)},{scale_filter(spec.width)}"
    source = ffmpeg.input_args(spec.url, io_timeout_s, analyze_s=analyze_s)
    log = keyframe_log_args() if log_keyframes else []
    jpeg = ["-fps_mode", "passthrough", "-threads", "1", *ffmpeg.jpeg_output_args(JPEG_QSCALE)]
    if spec.mode is DecodeMode.KEYFRAMES and packet_drop:
        drop, threads = keyframe_drop_filter(spec.fps), 1
    elif spec.mode is DecodeMode.ALL and packet_drop and spec.gop_prefix:
        drop, threads = gop_prefix_filter(spec.fps), spec.decode_threads
    else:
        if spec.mode is DecodeMode.KEYFRAMES:
            decode = ["-discard", "nokey", "-skip_frame", "nokey", "-threads", "1"]
        else:
            decode = ["-threads", str(spec.decode_threads)]
        return SamplerCommand(
            [*head, *decode, *source, "-map", "0:v:0", "-vf", video_filter, *jpeg, *log]
        )
    receiver = [
        *head, *source,
        "-map", "0:v:0", "-c", "copy", "-bsf:v", drop, "-flush_packets", "1", "-f", "nut", "pipe:1",
        *log,
    ]  # fmt: skip
    decoder = [
        *head, "-threads", str(threads), "-probesize", str(PIPE_PROBE_BYTES),
        "-copyts", "-f", "nut", "-i", "pipe:0", "-vf", video_filter, *jpeg,
    ]  # fmt: skip
    return SamplerCommand(decoder, receiver)


# ffmpeg's raw (Annex B) demuxers, by codec.
_RAW_FORMATS = {Codec.H264: "h264", Codec.H265: "hevc"}


def feed_decoder_argv(ffmpeg_bin: str, codec: Codec, width: int) -> list[str]:
    """The decoder behind a keyframe feed (:class:`~heldar.media.pipeline.FeedPipeline`).

    It reads only the keyframes to output, as Annex B, so it neither selects (the feed did, on
    the stream's own RTP time) nor probes (the first keyframe tells the codec parameters).
    """
    return [
        ffmpeg_bin, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "warning",
        "-filter_threads", "1", "-threads", "1",
        "-probesize", str(PIPE_PROBE_BYTES), "-analyzeduration", "0",
        "-f", _RAW_FORMATS[codec], "-i", "pipe:0", "-vf", scale_filter(width),
        "-fps_mode", "passthrough", "-threads", "1", *ffmpeg.jpeg_output_args(JPEG_QSCALE),
    ]  # fmt: skip


class Sampler:
    def __init__(
        self,
        spec: SamplerSpec,
        *,
        ffmpeg_bin: str,
        frames: FrameStore,
        events: EventLog,
        clock: Clock,
        rng: random.Random | None = None,
        packet_drop: bool = True,
        keyframe_interval_s: float | None = None,
        frame_size: FrameSize | None = None,
        on_keyframe_interval: Callable[[SamplerKey, float], None] | None = None,
        on_frame_size: Callable[[SamplerKey, FrameSize], None] | None = None,
        feeds: FeedHub | None = None,
    ) -> None:
        """``packet_drop``: see :func:`build_argv`. ``keyframe_interval_s`` and ``frame_size``:
        what earlier samplers of this stream learned, if anything. The callbacks hear what this
        one learns: the keyframe interval when it is new or changed, the frame size once per run.
        ``feeds``: where keyframe mode on RTSP receives (the kernel's own receiving, until a
        stream turns out to be neither H.264 nor H.265); None: an ffmpeg receiver.
        """
        self.spec = spec
        self._on_keyframe_interval = on_keyframe_interval
        self._on_frame_size = on_frame_size
        self.keyframe_interval_s = keyframe_interval_s
        self.frame_size = frame_size
        self._packet_drop = packet_drop
        self._feeds = feeds
        # Set by a run whose failure was ours to fix (a probe too short, a stream the feed
        # cannot take): the next run starts at once, without backoff.
        self._retry_at_once = False
        # One packet of probing until a run shows that it does not tell the codec parameters.
        self._analyze_s: float | None = None
        self._ffmpeg_bin = ffmpeg_bin
        self._frames = frames
        self._events = events
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.state = SamplerState.CONNECTING
        self.frames_total = 0
        self.restarts = 0
        self.last_error: str | None = None
        self.pid: int | None = None  # the process that delivers the frames
        self.pids: tuple[int, ...] = ()  # every process of the current run
        self.receiver: KeyframeReceiver | None = None  # who receives the stream in this run
        self._announced_offline = False

    @property
    def key(self) -> SamplerKey:
        return self.spec.key

    async def run(self) -> None:
        """Sample until cancelled. Never raises anything but CancelledError."""
        attempt = 0
        try:
            while True:
                problem = self._source_problem()
                if problem is not None:
                    self._set_error(problem)
                    await asyncio.sleep(BACKOFF_MAX_S)
                    continue
                started = self._clock.monotonic()
                self._retry_at_once = False
                try:
                    delivered = await self._run_once()
                except Exception as exc:  # a bug here must not end every sampler's TaskGroup
                    log.exception("sampler %s: unexpected failure", self._label)
                    self._set_error(f"internal error: {type(exc).__name__}")
                    delivered = False
                self.restarts += 1
                if self._retry_at_once:
                    continue  # not the camera at fault
                healthy = delivered and self._clock.monotonic() - started >= HEALTHY_RUN_S
                attempt = 0 if healthy else attempt + 1
                await asyncio.sleep(backoff_delay_s(attempt, self._rng))
        finally:
            self.state = SamplerState.STOPPED
            self.pid = None
            self.pids = ()
            self.receiver = None

    def _source_problem(self) -> str | None:
        url = self.spec.url
        if url is None:
            return "no usable stream URL for this profile (set a URL or the camera address)"
        path = url.file_path
        if path is not None and not path.is_file():
            return f"file source {path} does not exist"
        return None

    def _feed_hub(self) -> FeedHub | None:
        """The hub this run receives through, or None for an ffmpeg receiver."""
        url = self.spec.url
        keyframes_on_rtsp = (
            self._packet_drop
            and self.spec.mode is DecodeMode.KEYFRAMES
            and url is not None
            and url.is_rtsp
        )
        return self._feeds if keyframes_on_rtsp else None

    async def _start_feed(
        self, feeds: FeedHub, on_keyframe: Callable[[float], None], label: str
    ) -> FeedPipeline | None:
        """Connect a keyframe feed and start its decoder; None after a connection failure
        (already handled); raises :class:`~heldar.errors.Unavailable` if the decoder cannot
        be spawned."""
        assert self.spec.url is not None
        try:
            feed = await feeds.connect(
                self.spec.url.reveal(),
                self.spec.fps,
                on_keyframe=on_keyframe,
                on_size=self._learned_size,
            )
        except UnsupportedStream as exc:
            # ffmpeg's RTSP client speaks more dialects and codecs than the feed's.
            log.info("sampler %s: %s; receiving with ffmpeg from now on", self._label, exc)
            self._feeds = None
            self._retry_at_once = True
            return None
        except RtspError as exc:
            await self._went_down(SamplerState.OFFLINE, str(exc), "")
            return None
        argv = feed_decoder_argv(self._ffmpeg_bin, feed.codec, self.spec.width)
        return await FeedPipeline.start(feeds, feed, argv, label=label, nice=SAMPLER_NICE)

    async def _start_ffmpeg(
        self, hook: Callable[[str], str | None], label: str
    ) -> FfmpegProcess | FfmpegPipeline:
        """Start the ffmpeg command of this run (:func:`build_argv`)."""
        stream_known = self.keyframe_interval_s is not None and self.frame_size is not None
        command = build_argv(
            self._ffmpeg_bin,
            self.spec,
            ffmpeg.DEFAULT_IO_TIMEOUT_S,
            packet_drop=self._packet_drop,
            log_keyframes=logs_keyframes(self.spec, stream_known=stream_known),
            analyze_s=self._analyze_s,
        )
        if command.receiver is None:
            return await FfmpegProcess.start(
                command.decoder, label=label, stderr_line_hook=hook, nice=SAMPLER_NICE
            )
        return await FfmpegPipeline.start(
            command.receiver,
            command.decoder,
            label=label,
            receiver_stderr_hook=hook,
            nice=SAMPLER_NICE,
        )

    async def _run_once(self) -> bool:
        """One run of the decoder (and its receiver); True if it delivered at least one frame."""
        keyframes = KeyframeIntervals()

        def on_keyframe(pts_time_s: float) -> None:
            keyframes.add(pts_time_s)
            self._learned(keyframes.interval_s)

        label = f"sampler {self._label}"
        proc: FfmpegProcess | FfmpegPipeline | FeedPipeline | None
        try:
            if (feeds := self._feed_hub()) is not None:
                proc = await self._start_feed(feeds, on_keyframe, label)
                if proc is None:
                    return False
            else:
                hook = stderr_filter(on_keyframe, self._learned_size)
                proc = await self._start_ffmpeg(hook, label)
        except Unavailable as exc:
            self._set_error(exc.message)
            return False
        delivered = False
        stalled = False
        self.pid = proc.pid
        self.pids = proc.pids
        feeding = isinstance(proc, FeedPipeline)
        self.receiver = KeyframeReceiver.KERNEL if feeding else KeyframeReceiver.FFMPEG
        # A retry during an announced outage keeps showing it (offline or stalled) until frames
        # arrive, rather than flapping to connecting on every attempt.
        if not (self._announced_offline and self.state in _DOWN_STATES):
            self.state = SamplerState.CONNECTING
        try:
            frames = read_frames(proc.stdout)
            timeout_s = stall_timeout_s(self.spec.fps)
            while True:
                try:
                    async with asyncio.timeout(timeout_s):
                        data = await anext(frames, None)
                except TimeoutError:
                    stalled = True
                    break
                if data is None:
                    break
                await self._publish(data)
                delivered = True
        finally:
            await proc.stop(STOP_GRACE_S)
            self.pid = None
            self.pids = ()
            self.receiver = None
        tail = proc.stderr_tail()
        if not delivered and not stalled and ffmpeg.missing_parameters(tail):
            longer_s = longer_analysis_s(self._analyze_s)
            if longer_s is not None:
                log.info(
                    "sampler %s: the probe did not learn the codec parameters; analysing %g s of "
                    "the stream from now on",
                    self._label,
                    longer_s,
                )
                self._analyze_s = longer_s
                self._retry_at_once = True
                return False
        if stalled:
            reason = f"no frame for {timeout_s:g} s; restarting ffmpeg"
            await self._went_down(SamplerState.STALLED, reason, tail)
        else:
            reason = proc.failure_reason()
            await self._went_down(SamplerState.OFFLINE, reason, tail)
        return delivered

    def _learned(self, interval_s: float | None) -> None:
        """Keep the stream's keyframe interval; tell the manager when it is new or changed."""
        if interval_s is None:
            return
        known = self.keyframe_interval_s
        self.keyframe_interval_s = interval_s
        changed = known is None or abs(interval_s - known) > KEYFRAME_INTERVAL_CHANGE * known
        if changed and self._on_keyframe_interval is not None:
            self._on_keyframe_interval(self.key, interval_s)

    def _learned_size(self, size: FrameSize) -> None:
        self.frame_size = size
        if self._on_frame_size is not None:
            self._on_frame_size(self.key, size)

    async def _publish(self, data: bytes) -> None:
        try:
            width, height = jpeg_dimensions(data)
        except ValueError:
            log.debug("sampler %s: skipped an undecodable frame", self._label)
            return
        try:
            await self._frames.publish(self.key.camera_id, self.key.profile, data, width, height)
        except OSError as exc:  # disk full, permissions: report, keep decoding
            reason = f"cannot write the frame file: {exc.strerror or exc}"
            if self.last_error != reason:
                log.warning("sampler %s: %s", self._label, reason)
            self.last_error = reason
            return
        self.frames_total += 1
        if self.state is not SamplerState.SAMPLING:
            # The event first, then the state: whoever sees the new state finds its event.
            if self._announced_offline:
                self._announced_offline = False
                log.info("sampler %s is back online", self._label)
                await self._append_event(
                    "sampler_online", Severity.INFO, {"profile": self.key.profile}
                )
            self.state = SamplerState.SAMPLING
            self.last_error = None

    async def _went_down(self, state: SamplerState, reason: str, stderr_tail: str) -> None:
        """Show ``state``; announce the first going down after sampling (the event first, as in
        ``_publish``)."""
        if self.state is SamplerState.SAMPLING and not self._announced_offline:
            self._announced_offline = True
            log.warning("sampler %s went %s: %s", self._label, state.value, reason)
            await self._append_event(
                "sampler_offline",
                Severity.WARNING,
                {
                    "profile": self.key.profile,
                    "state": state.value,
                    "reason": reason,
                    "stderr_tail": stderr_tail,
                },
            )
        self.state = state
        self.last_error = reason

    async def _append_event(
        self, event_type: str, severity: Severity, payload: dict[str, object]
    ) -> None:
        """Log an event. A failed write (database locked, disk full) is logged, not raised: it
        would end this sampler's task and, through the manager's TaskGroup, every sampler."""
        try:
            await self._events.append(
                event_type, severity, camera_id=self.key.camera_id, payload=payload
            )
        except Exception:
            log.exception("sampler %s: cannot log the %s event", self._label, event_type)

    def _set_error(self, reason: str) -> None:
        if self.state is not SamplerState.ERROR or self.last_error != reason:
            log.warning("sampler %s error: %s", self._label, reason)
        self.state = SamplerState.ERROR
        self.last_error = reason

    @property
    def _label(self) -> str:
        return f"{self.key.camera_id}/{self.key.profile}"

"""Time-lapse encoding (SPEC §6): stored snapshot JPEGs in, one H.264 MP4 out.

:func:`encode_timelapse` runs one ffmpeg (an :class:`~heldar.media.process.FfmpegProcess`) over
an ``ffconcat`` list of the images and reports progress from ffmpeg's ``-progress`` output.

Invariants:

* **One video frame per image**, in the given order, each shown for ``1 / fps`` s. ffmpeg reads
  the ``ffconcat`` list with ``-r fps`` as an *input* option, which replaces the demuxer's
  timestamps by ``n / fps`` (the concat demuxer keeps the first file's 1/25 s time base, so
  ``duration`` lines would land 1/60 s steps on one 1/25 s tick: frames with equal timestamps),
  and encodes with ``-fps_mode passthrough``, so no frame is duplicated or dropped to fit a
  rate; ``-r fps`` on the output sets the encoder's time base and the stream's rate. The list
  has no ``duration`` lines, so the concat quirk of the last entry's duration does not arise.
  The frame count ffmpeg reports at the end is checked against the number of images: a missing
  or undecodable image is an error, never a silently shorter video.
* **One frame size.** Snapshots of one camera differ in size (sampler frames vs. full grabs):
  every image is scaled to fit the output size with its aspect ratio kept, then padded (black)
  to it. :func:`output_size` picks the largest input, even-sized as yuv420p requires.
* **Always reaped, list file always removed.** The process is stopped on success, error and
  cancellation; the list file beside the output is deleted in every case. The output file
  itself belongs to the caller (it may be partial after an error).

Callers bound the work with :data:`MAX_TIMELAPSE_FRAMES` and hold a media-job slot while this
runs; it refuses more frames with :class:`ValueError` as a backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from heldar.errors import Unavailable
from heldar.media.jpeg import jpeg_dimensions
from heldar.media.process import FfmpegProcess

__all__ = [
    "MAX_FPS",
    "MAX_OUTPUT_PIXELS",
    "MAX_TIMELAPSE_FRAMES",
    "MIN_FPS",
    "EncodedTimelapse",
    "ProgressCallback",
    "build_argv",
    "concat_list",
    "encode_timelapse",
    "output_size",
]

ProgressCallback = Callable[[int, int], None]
"""``on_progress(frames_done, frames_total)``; called from the event loop, must not block."""

# At 10 fps this is ~17 minutes of video. Encoding it at 1080p took ~4 min on two cores here
# (about 40 frames/s with the preset below), which is as long as an HTTP request should hold a
# media-job slot and a client should wait; longer periods need a lower sampling of snapshots.
MAX_TIMELAPSE_FRAMES = 10_000
# Output rates a player shows as they are: 1 image/s for slow review, 60 for a fast sweep (most
# displays refresh at 60 Hz, so more would be dropped on screen anyway).
MIN_FPS = 1
MAX_FPS = 60
# A 4K frame. Larger (8K, panoramic) snapshots are scaled down to this area: x264 slows down
# linearly with pixels and a time-lapse gains nothing from more detail than a screen shows.
MAX_OUTPUT_PIXELS = 3840 * 2160
# x264 defaults: CRF 23 is its "visually fine" quality; `veryfast` encodes ~2x faster than
# `medium` for ~10 % more bytes (200 frames of 1080p: 4.9 s against ~10 s here).
X264_CRF = 23
X264_PRESET = "veryfast"
# Encoder threads. An export shares the CPU with live samplers and up to
# HELDAR_MEDIA_JOB_CONCURRENCY - 1 other jobs; x264's default (1.5x the cores) would starve them.
ENCODER_THREADS = 2
# ffmpeg writes a progress block every 0.5 s while frames flow. The longest silent phase is the
# `+faststart` pass after the last frame, which copies the file once (seconds even for a GB), so
# a minute of silence means ffmpeg is stuck.
PROGRESS_STALL_TIMEOUT_S = 60.0
# Encoding reads local files only; on SIGTERM ffmpeg just stops writing a file we discard.
STOP_GRACE_S = 2.0
_LIST_SUFFIX = ".ffconcat"


@dataclass(frozen=True, slots=True)
class EncodedTimelapse:
    frames: int  # video frames written: one per input image
    width: int
    height: int
    fps: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps


def output_size(sizes: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """The frame size for images of ``sizes`` (width, height): the largest by area, even-sized.

    The first of equal areas wins. Above :data:`MAX_OUTPUT_PIXELS` the size is scaled down with
    its aspect ratio kept. Both sides are rounded down to even numbers (at least 2): H.264 in
    yuv420p needs them even. Raises ValueError for no sizes or a non-positive side.
    """
    best: tuple[int, int] | None = None
    for width, height in sizes:
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if best is None or width * height > best[0] * best[1]:
            best = (width, height)
    if best is None:
        raise ValueError("no image sizes given")
    width, height = best
    if width * height > MAX_OUTPUT_PIXELS:
        factor = math.sqrt(MAX_OUTPUT_PIXELS / (width * height))
        width, height = int(width * factor), int(height * factor)
    return max(2, width - width % 2), max(2, height - height % 2)


def concat_list(images: Sequence[Path]) -> str:
    """An ``ffconcat`` list of the images, absolute paths, in order.

    Paths are single-quoted with ``'`` escaped as ``'\\''``; a path with a line break cannot be
    written in the format and raises ValueError. Timing comes from ``-r`` (see the module doc).
    """
    lines = ["ffconcat version 1.0"]
    for image in images:
        path = str(image.absolute())
        if "\n" in path or "\r" in path:
            raise ValueError(f"image path {path!r} contains a line break")
        quoted = path.replace("'", "'\\''")
        lines.append(f"file '{quoted}'")
    return "\n".join(lines) + "\n"


def build_argv(
    ffmpeg_bin: str, list_path: Path, out_path: Path, *, fps: int, size: tuple[int, int]
) -> list[str]:
    """The encoder command: concat input, fit + pad to ``size``, H.264 MP4, progress on stdout."""
    width, height = size
    video_filter = (
        f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
        f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1,format=yuv420p"
    )
    return [
        ffmpeg_bin, "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats",
        "-progress", "pipe:1",
        "-r", str(fps), "-f", "concat", "-safe", "0", "-i", str(list_path),
        "-an", "-sn", "-dn",
        "-vf", video_filter,
        "-fps_mode", "passthrough", "-r", str(fps),
        "-c:v", "libx264", "-preset", X264_PRESET, "-crf", str(X264_CRF),
        "-pix_fmt", "yuv420p", "-threads", str(ENCODER_THREADS),
        "-movflags", "+faststart",
        "-f", "mp4", "-y", str(out_path),
    ]  # fmt: skip


async def encode_timelapse(
    ffmpeg_bin: str,
    images: Sequence[Path],
    out_path: Path,
    *,
    fps: int,
    frame_size: tuple[int, int] | None = None,
    on_progress: ProgressCallback | None = None,
    label: str = "time-lapse",
) -> EncodedTimelapse:
    """Encode ``images`` (JPEG files, oldest first) into an MP4 at ``out_path``.

    ``frame_size`` is the output (width, height), rounded down to even; by default the size of
    the first image (read from its header). Pass :func:`output_size` of the known sizes to fit
    mixed sizes to the largest. ``on_progress(done, total)`` is called with 0 first, then as
    ffmpeg reports frames. The list file is written beside ``out_path``.

    Raises ValueError for no images, more than MAX_TIMELAPSE_FRAMES, or ``fps`` out of range;
    :class:`~heldar.errors.Unavailable` (with ffmpeg's last error line, redacted) when ffmpeg
    cannot start, fails, stalls, or writes a different number of frames.
    """
    total = len(images)
    if total == 0:
        raise ValueError("a time-lapse needs at least one image")
    if total > MAX_TIMELAPSE_FRAMES:
        raise ValueError(f"{total} images; a time-lapse takes at most {MAX_TIMELAPSE_FRAMES}")
    if not MIN_FPS <= fps <= MAX_FPS:
        raise ValueError(f"fps must be {MIN_FPS}..{MAX_FPS}, got {fps}")
    if frame_size is None:
        frame_size = await asyncio.to_thread(_image_size, images[0])
    size = output_size([frame_size])
    list_path = out_path.with_name(out_path.name + _LIST_SUFFIX)
    try:
        await asyncio.to_thread(_write_list, list_path, images, label)
        argv = build_argv(ffmpeg_bin, list_path, out_path, fps=fps, size=size)
        if on_progress is not None:
            on_progress(0, total)
        frames = await _run(argv, label=label, total=total, on_progress=on_progress)
    finally:
        await asyncio.shield(asyncio.to_thread(list_path.unlink, missing_ok=True))
    return EncodedTimelapse(frames=frames, width=size[0], height=size[1], fps=fps)


async def _run(
    argv: list[str], *, label: str, total: int, on_progress: ProgressCallback | None
) -> int:
    """Run the encoder to its end; return the frame count it reported (checked == ``total``)."""
    frames = 0
    finished = False  # ffmpeg wrote `progress=end`
    async with await FfmpegProcess.start(argv, label=label) as proc:
        while True:
            try:
                async with asyncio.timeout(PROGRESS_STALL_TIMEOUT_S):
                    raw = await proc.stdout.readline()
            except TimeoutError:
                await proc.stop(STOP_GRACE_S)
                raise Unavailable(
                    f"{label}: ffmpeg reported no progress for {PROGRESS_STALL_TIMEOUT_S:g} s "
                    f"and was stopped{_last_line(proc)}"
                ) from None
            if not raw:
                break
            key, _, value = raw.decode("utf-8", "replace").strip().partition("=")
            if key == "frame":
                with contextlib.suppress(ValueError):
                    reported = int(value)
                    if reported != frames:
                        frames = reported
                        if on_progress is not None:
                            on_progress(min(frames, total), total)
            elif key == "progress" and value == "end":
                finished = True
        returncode = await proc.wait()
        if returncode != 0 or not finished:
            raise Unavailable(f"{label}: ffmpeg failed (exit {returncode}){_last_line(proc)}")
        if frames != total:
            raise Unavailable(
                f"{label}: ffmpeg wrote {frames} frames for {total} images{_last_line(proc)}"
            )
    return frames


def _last_line(proc: FfmpegProcess) -> str:
    """``": <why ffmpeg ended>"`` (redacted by the ring)."""
    return f": {proc.failure_reason()}"


def _write_list(list_path: Path, images: Sequence[Path], label: str) -> None:
    """Write the concat list, after checking every image is there (ffmpeg's error is obscure)."""
    for image in images:
        if not image.is_file():
            raise Unavailable(f"{label}: image {image} does not exist (deleted meanwhile?)")
    list_path.write_text(concat_list(images), "utf-8")


def _image_size(path: Path) -> tuple[int, int]:
    try:
        return jpeg_dimensions(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise Unavailable(f"cannot read the size of {path.name}: {exc}") from None

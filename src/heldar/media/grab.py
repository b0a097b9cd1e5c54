"""One-shot grab: start ffmpeg on a source, take its first decoded frame as a JPEG, stop.

Tuned for a fast first frame (RTSP probes one packet, see
:data:`heldar.media.ffmpeg.RTSP_PROBE_BYTES`); full resolution; the process is always
stopped and reaped, also on timeout or cancellation. Errors are :class:`Unavailable` with the
redacted reason ffmpeg gave, never the URL's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from heldar.errors import Unavailable
from heldar.media import ffmpeg
from heldar.media.jpeg import jpeg_dimensions, read_frames
from heldar.media.process import FfmpegProcess
from heldar.media.urls import StreamUrl

# Snapshots are kept: quality over size (2 is the encoder's best).
GRAB_JPEG_QSCALE = 2
# ffmpeg has nothing to finalise when it only wrote one frame to a pipe.
GRAB_STOP_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class GrabbedFrame:
    data: bytes
    width: int
    height: int
    captured_at: datetime  # when the frame arrived, before the process was stopped


def grab_argv(ffmpeg_bin: str, url: StreamUrl, io_timeout_s: float) -> list[str]:
    return [
        ffmpeg_bin, "-nostdin", "-hide_banner", "-loglevel", "error",
        *ffmpeg.input_args(url, io_timeout_s),
        "-frames:v", "1",
        "-vf", ffmpeg.full_range_filter(),
        *ffmpeg.jpeg_output_args(GRAB_JPEG_QSCALE),
    ]  # fmt: skip


async def grab_frame(
    ffmpeg_bin: str, url: StreamUrl, *, timeout_s: float, now: Callable[[], datetime]
) -> GrabbedFrame:
    """The first frame of ``url`` within ``timeout_s``, stamped by ``now`` as it arrives;
    Unavailable when there is none."""
    path = url.file_path
    if path is not None and not path.is_file():
        raise Unavailable(f"file source {path} does not exist")
    io_timeout_s = min(ffmpeg.DEFAULT_IO_TIMEOUT_S, timeout_s)
    proc = await FfmpegProcess.start(
        grab_argv(ffmpeg_bin, url, io_timeout_s), label=f"grab {url.masked}"
    )
    data: bytes | None = None
    captured_at = None
    timed_out = False
    async with proc:
        frames = read_frames(proc.stdout)
        async with contextlib.aclosing(frames):
            try:
                async with asyncio.timeout(timeout_s):
                    data = await anext(frames, None)
                    captured_at = now()
            except TimeoutError:
                timed_out = True
        await proc.stop(GRAB_STOP_GRACE_S)
    if data is not None and captured_at is not None:
        try:
            width, height = jpeg_dimensions(data)
        except ValueError:
            raise Unavailable(f"{url.masked}: ffmpeg returned an undecodable image") from None
        return GrabbedFrame(data, width, height, captured_at)
    if timed_out:
        raise Unavailable(f"{url.masked}: no frame within {timeout_s:g} s")
    reason = proc.failure_reason()
    raise Unavailable(reason if url.masked in reason else f"{url.masked}: {reason}")

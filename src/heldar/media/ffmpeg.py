"""Finding the ffmpeg/ffprobe binaries and building their input arguments.

Discovery order (SPEC §2): the ``HELDAR_FFMPEG_BIN`` setting, else ``ffmpeg`` on PATH,
else the binary shipped by the ``imageio-ffmpeg`` wheel, so ``pip install`` alone works.
ffprobe is optional: the kernel itself never needs it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from heldar.errors import ConfigError, Unavailable
from heldar.media.urls import StreamUrl

# How long a blocked network read or connect may hold ffmpeg before it gives up. Longer
# than the sampler's stall watchdog (10 s), so a frozen stream is reported as `stalled`;
# this is the backstop for one-shot jobs that have no watchdog of their own.
DEFAULT_IO_TIMEOUT_S = 15.0
VERSION_PROBE_TIMEOUT_S = 10.0
# How much of a live RTSP stream ffmpeg reads to learn it before decoding: one packet. RTSP
# carries the codec parameters in its SDP, which a decoder reads with the first packet.
# Everything read while probing is decoded in one go afterwards and stamped "now" on arrival,
# so a longer probe delivers stale frames in a burst: the default (5 s) delivered 4 frames in
# 10 ms, up to 1.5 s old; 0.5 s still delivered frames up to 0.35 s late. One packet also
# brought a fresh grab of a 1080p stream with a 2 s GOP from 2.7 s to 1.1 s (median, SPEC §8)
# and the first sampler frame from 0.87-1.93 s to 0.67-0.80 s. (The probe is bounded by size:
# `-analyzeduration 0` would mean "the default", 5 s.)
RTSP_PROBE_BYTES = 32
# Where one packet does not tell the frame size (no parameters in the SDP, or a probe decoder
# that skips non-key frames), stream copies refuse to start; ffmpeg then says so in one of
# these ways, and the caller probes longer (see `input_args`).
_MISSING_PARAMETERS = ("dimensions not set", "Could not find codec parameters")
_US_PER_S = 1_000_000
_NOISE_DROP_OPTION = re.compile(r"^\s*-drop\s", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Binaries:
    ffmpeg: str
    ffprobe: str | None
    ffmpeg_source: str  # "setting", "path" or "imageio-ffmpeg"


def discover(ffmpeg_setting: str | None = None, ffprobe_setting: str | None = None) -> Binaries:
    """Resolve the binaries; raise ConfigError when an explicit setting is unusable."""
    if ffmpeg_setting:
        ffmpeg = _explicit("HELDAR_FFMPEG_BIN", ffmpeg_setting)
        source = "setting"
    elif found := shutil.which("ffmpeg"):
        ffmpeg, source = found, "path"
    else:
        ffmpeg, source = _bundled_ffmpeg(), "imageio-ffmpeg"
    ffprobe = (
        _explicit("HELDAR_FFPROBE_BIN", ffprobe_setting)
        if ffprobe_setting
        else shutil.which("ffprobe")
    )
    return Binaries(ffmpeg=ffmpeg, ffprobe=ffprobe, ffmpeg_source=source)


def _explicit(variable: str, value: str) -> str:
    resolved = shutil.which(value)
    if resolved is None:
        raise ConfigError(f"{variable}: {value!r} is not an executable file or a name on PATH")
    return resolved


def _bundled_ffmpeg() -> str:
    try:
        import imageio_ffmpeg

        path = str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:
        raise ConfigError(
            f"no ffmpeg found: not on PATH and the imageio-ffmpeg binary is missing ({exc}); "
            "install ffmpeg or set HELDAR_FFMPEG_BIN"
        ) from None
    if not Path(path).is_file():
        raise ConfigError(f"no ffmpeg found: {path} does not exist; set HELDAR_FFMPEG_BIN")
    return path


async def probe_version(ffmpeg: str) -> str:
    """First line of ``ffmpeg -version``; raise Unavailable if it cannot run."""
    out = await _output_of(ffmpeg, "-version")
    first_line = out.decode("utf-8", "replace").splitlines()[0]
    return first_line.split(" Copyright", 1)[0].strip()


async def probe_packet_drop(ffmpeg: str) -> bool:
    """Whether the ``noise`` bitstream filter takes a ``drop`` expression (ffmpeg 5.1+): the
    keyframe sampler's receiver drops packets with it (:mod:`heldar.services.sampler`)."""
    try:
        out = await _output_of(ffmpeg, "-h", "bsf=noise")
    except Unavailable:
        return False
    return _NOISE_DROP_OPTION.search(out.decode("utf-8", "replace")) is not None


async def _output_of(ffmpeg: str, *args: str) -> bytes:
    """stdout of a short informational ffmpeg run; Unavailable if it fails or says nothing."""
    try:
        proc = await asyncio.create_subprocess_exec(
            ffmpeg,
            "-hide_banner",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        raise Unavailable(f"ffmpeg at {ffmpeg} cannot be started: {exc.strerror}") from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), VERSION_PROBE_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise Unavailable(f"ffmpeg at {ffmpeg} did not answer {' '.join(args)} in time") from None
    if proc.returncode != 0 or not out:
        raise Unavailable(f"ffmpeg at {ffmpeg} failed to answer {' '.join(args)}")
    return out


def input_args(
    url: StreamUrl, io_timeout_s: float = DEFAULT_IO_TIMEOUT_S, *, analyze_s: float | None = None
) -> list[str]:
    """ffmpeg options and ``-i`` for a source; the only place that reveals credentials.

    RTSP is probed for one packet, or for ``analyze_s`` seconds of stream where one packet
    was not enough (:func:`missing_parameters`).
    """
    timeout_us = str(int(io_timeout_s * _US_PER_S))
    scheme = url.scheme
    if url.is_rtsp:
        opts = ["-rtsp_transport", "tcp", "-timeout", timeout_us]
        if analyze_s is None:
            opts += ["-probesize", str(RTSP_PROBE_BYTES)]
        else:
            opts += ["-analyzeduration", str(int(analyze_s * _US_PER_S))]
    elif scheme in ("http", "https"):
        opts = ["-rw_timeout", timeout_us]
    elif scheme == "file":
        # Demo and test clips: loop forever at native rate, like a live camera.
        path = url.file_path
        assert path is not None
        return ["-re", "-stream_loop", "-1", "-i", str(path)]
    else:
        raise Unavailable(f"unsupported source scheme {scheme!r}")
    return [*opts, "-i", url.reveal()]


def missing_parameters(stderr: str) -> bool:
    """Whether ffmpeg gave up because the probe did not learn the stream's codec parameters."""
    return any(marker in stderr for marker in _MISSING_PARAMETERS)


def full_range_filter() -> str:
    """The filter tail for JPEG output: full range, plain ``yuv420p`` (see below)."""
    return "scale=out_range=full,format=yuv420p"


def jpeg_output_args(qscale: int) -> list[str]:
    """Encode to JPEG on stdout (``image2pipe``) from a full-range ``yuv420p`` filter output.

    The scaler converts to full range itself and hands the encoder plain ``yuv420p`` tagged full
    range (the same JPEG bytes as the default path). The default path goes through the
    deprecated ``yuvj420p``, which makes swscale print "deprecated pixel format used" warnings
    that fill stderr tails and became the reason of failure events.
    ``qscale``: 2 (best) .. 31 (worst).
    """
    return [
        "-an", "-sn", "-dn",
        "-c:v", "mjpeg", "-q:v", str(qscale), "-color_range", "pc", "-strict", "unofficial",
        "-f", "image2pipe", "pipe:1",
    ]  # fmt: skip

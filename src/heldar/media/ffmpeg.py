"""Finding the ffmpeg/ffprobe binaries and building their input arguments.

Discovery order (SPEC §2): the ``HELDAR_FFMPEG_BIN`` setting, else ``ffmpeg`` on PATH,
else the binary shipped by the ``imageio-ffmpeg`` wheel, so ``pip install`` alone works.
ffprobe is optional: the kernel itself never needs it.
"""

from __future__ import annotations

import asyncio
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
# How much live RTSP ffmpeg reads to learn the stream before decoding. The default (5 s)
# made it decode ~2 s of buffered video in one burst at start: frames stamped "now" that were
# up to 1.5 s old. 0.5 s removed the burst and brought the first frame sooner on the test
# camera (2.5 s against 2.1-3.9 s at 2 fps; `-fflags nobuffer` removed it too, but took 4.5 s
# and produced a decode error). Stream dimensions still come from the first decoded frame.
RTSP_ANALYZE_DURATION_S = 0.5
_US_PER_S = 1_000_000


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
    try:
        proc = await asyncio.create_subprocess_exec(
            ffmpeg,
            "-hide_banner",
            "-version",
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
        raise Unavailable(f"ffmpeg at {ffmpeg} did not answer -version in time") from None
    if proc.returncode != 0 or not out:
        raise Unavailable(f"ffmpeg at {ffmpeg} failed to report its version")
    first_line = out.decode("utf-8", "replace").splitlines()[0]
    return first_line.split(" Copyright", 1)[0].strip()


def input_args(url: StreamUrl, io_timeout_s: float = DEFAULT_IO_TIMEOUT_S) -> list[str]:
    """ffmpeg options and ``-i`` for a source; the only place that reveals credentials."""
    timeout_us = str(int(io_timeout_s * _US_PER_S))
    scheme = url.scheme
    if scheme in ("rtsp", "rtsps"):
        analyze_us = str(int(RTSP_ANALYZE_DURATION_S * _US_PER_S))
        opts = ["-rtsp_transport", "tcp", "-timeout", timeout_us, "-analyzeduration", analyze_us]
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

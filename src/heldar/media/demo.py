"""The demo source: a generated moving test pattern under ``<data>/media``.

Lets a newcomer see the kernel work with no camera of their own (``HELDAR_DEMO=1``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from heldar.errors import Unavailable
from heldar.redaction import redact

log = logging.getLogger(__name__)

DEMO_CAMERA_ID = "demo"
DEMO_CLIP_NAME = "demo.mp4"
DEMO_WIDTH, DEMO_HEIGHT, DEMO_FPS = 640, 360, 15
DEMO_DURATION_S = 30
DEMO_GOP_FRAMES = 2 * DEMO_FPS  # a keyframe every 2 s, like a typical camera
DEMO_ENCODE_TIMEOUT_S = 120.0


async def ensure_demo_clip(ffmpeg: str, media_dir: Path) -> Path:
    """Return the demo clip path, encoding it once (temp file + rename) if missing."""
    clip = media_dir / DEMO_CLIP_NAME
    if clip.is_file():
        return clip
    media_dir.mkdir(parents=True, exist_ok=True)
    tmp = clip.with_suffix(".tmp.mp4")
    argv = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi",
        "-i", f"testsrc2=size={DEMO_WIDTH}x{DEMO_HEIGHT}:rate={DEMO_FPS}:d={DEMO_DURATION_S}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-g", str(DEMO_GOP_FRAMES), "-movflags", "+faststart",
        str(tmp),
    ]  # fmt: skip
    log.info("generating demo clip %s", clip)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), DEMO_ENCODE_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        tmp.unlink(missing_ok=True)
        raise Unavailable("encoding the demo clip took too long") from None
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        reason = redact(err.decode("utf-8", "replace").strip()[-500:])
        raise Unavailable(f"could not encode the demo clip: {reason}")
    tmp.replace(clip)
    return clip

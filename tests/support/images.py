"""Test pictures: one JPEG rendered by ffmpeg from a lavfi source."""

from __future__ import annotations

import subprocess

from tests.support.binaries import ffmpeg_cmd

RENDER_TIMEOUT_S = 30.0


def lavfi_jpeg(source: str) -> bytes:
    """The first frame of a lavfi source (e.g. ``"testsrc2=s=160x90"``) as a JPEG."""
    result = subprocess.run(
        [*ffmpeg_cmd(), "-f", "lavfi", "-i", source,
         "-frames:v", "1", "-c:v", "mjpeg", "-f", "image2pipe", "pipe:1"],
        capture_output=True, check=True, timeout=RENDER_TIMEOUT_S,
    )  # fmt: skip
    assert result.stdout[:2] == b"\xff\xd8" and result.stdout[-2:] == b"\xff\xd9"
    return result.stdout

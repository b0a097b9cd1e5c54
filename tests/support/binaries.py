"""Where the tests find ffmpeg and ffprobe.

An explicit path in ``HELDAR_FFMPEG_BIN`` / ``HELDAR_FFPROBE_BIN`` wins, then ``PATH``. A missing
binary is an error, never a skip: the integration tier exists to run against the real tools.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def _find(name: str, env_var: str) -> str:
    configured = os.environ.get(env_var)
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise RuntimeError(
                f"{env_var}={configured!r} is not an executable file; fix or unset it"
            )
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"{name} was not found on PATH; install it (Debian: apt-get install ffmpeg) "
            f"or point {env_var} at the binary"
        )
    return found


def ffmpeg_bin() -> str:
    """The ffmpeg binary to run, or RuntimeError saying how to provide one."""
    return _find("ffmpeg", "HELDAR_FFMPEG_BIN")


def ffprobe_bin() -> str:
    """The ffprobe binary to run, or RuntimeError saying how to provide one."""
    return _find("ffprobe", "HELDAR_FFPROBE_BIN")


def ffmpeg_cmd() -> list[str]:
    """The start of every test's ffmpeg command: no stdin, no banner, errors only."""
    return [ffmpeg_bin(), "-nostdin", "-hide_banner", "-loglevel", "error"]

"""Media files on disk: the one rule for per-camera directories that come and go.

A store writes a new file as a temp file in ``<root>/<camera_id>/`` and removes that directory
once it is empty. Between "create the directory" and "create the temp file in it" another
thread's "remove the empty directory" must not run, or the write fails. :func:`create_temp`
and :func:`remove_empty_dir` therefore take one process-wide lock; both are a couple of
syscalls, so sharing it across stores costs nothing measurable.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

_DIRECTORY_LOCK = threading.Lock()


def create_temp(directory: Path, stem: str) -> tuple[int, Path]:
    """Create ``directory`` if needed and a new ``.<stem>.<random>.tmp`` in it, opened for
    writing (``O_EXCL``); returns (fd, path). Once it exists the directory is not empty."""
    temp = directory / f".{stem}.{secrets.token_hex(4)}.tmp"
    with _DIRECTORY_LOCK:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    return fd, temp


def remove_empty_dir(directory: Path, before: Callable[[], None] | None = None) -> None:
    """Run ``before`` (the file removals), then remove ``directory`` if it is empty, under the
    lock, so no writer loses the directory between its mkdir and its temp file."""
    with _DIRECTORY_LOCK:
        if before is not None:
            before()
        with contextlib.suppress(OSError):  # not empty (the usual case), or gone
            directory.rmdir()

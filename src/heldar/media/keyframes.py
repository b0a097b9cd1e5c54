"""Learning a stream's keyframe interval from ffmpeg's own log, at no decode cost.

The sampler's filter graph passes every keyframe it decodes through ``showinfo`` (after a
``select='key'`` in full-decode mode), and runs ffmpeg with ``-loglevel level+info`` so each
log line carries its level. :func:`stderr_filter` reads the ``pts_time`` of those keyframe lines,
keeps every ``info`` line out of the stderr tail (so failure reasons stay ffmpeg's warnings and
errors) and strips the level tag from the rest, so stored lines read as they always did.
:class:`KeyframeIntervals` turns keyframe times into an interval: the median of the recent gaps,
which ignores a lost keyframe or a timestamp jump.
"""

from __future__ import annotations

import re
import statistics
from collections import deque
from collections.abc import Callable

# One keyframe line of showinfo: "... n:   3 pts: 324000 pts_time:3.6 ... iskey:1 type:I ...".
_SHOWINFO_KEYFRAME = re.compile(r"\bpts_time:\s*(-?[0-9]+(?:\.[0-9]+)?)\b.*\biskey:1\b")
_LEVEL_TAG = re.compile(r"\[(panic|fatal|error|warning|info|verbose|debug|trace)\] ")
_QUIET_LEVELS = frozenset({"info", "verbose", "debug", "trace"})
# Gaps remembered: a few GOPs, so a changed GOP shows within seconds to a minute.
INTERVAL_WINDOW = 8
# Gaps outside this range are not keyframe intervals (a reset of the timestamps, a pause).
MIN_INTERVAL_S = 0.01
MAX_INTERVAL_S = 60.0


class KeyframeIntervals:
    """Keyframe times in, the typical interval between keyframes out."""

    def __init__(self, window: int = INTERVAL_WINDOW) -> None:
        self._gaps: deque[float] = deque(maxlen=window)
        self._last: float | None = None

    def add(self, pts_time_s: float) -> None:
        if self._last is not None:
            gap = pts_time_s - self._last
            if MIN_INTERVAL_S <= gap <= MAX_INTERVAL_S:
                self._gaps.append(gap)
        self._last = pts_time_s

    @property
    def interval_s(self) -> float | None:
        """Median gap between keyframes; None before two keyframes were seen."""
        return statistics.median(self._gaps) if self._gaps else None


def stderr_filter(on_keyframe: Callable[[float], None]) -> Callable[[str], str | None]:
    """A :class:`~heldar.media.process.StderrRing` line hook for ``-loglevel level+info``."""

    def hook(line: str) -> str | None:
        tag = _LEVEL_TAG.search(line)
        if tag is None:
            return line
        if tag.group(1) in _QUIET_LEVELS:
            if keyframe := _SHOWINFO_KEYFRAME.search(line):
                on_keyframe(float(keyframe.group(1)))
            return None
        return line[: tag.start()] + line[tag.end() :]

    return hook

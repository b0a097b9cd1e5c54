"""What a sampler learns about its stream from the keyframe packets, at no decode cost.

Every sampler command has a second, stream-copy output (:func:`keyframe_log_args`): the video
packets pass a ``noise`` bitstream filter that drops every non-key packet, and the ``framecrc``
muxer writes one line per keyframe *packet* to stderr, flushed at once::

    #tb 0: 1/90000
    #dimensions 0: 1920x1080
    0,     158400,     158400,     3600,    24117, 0x19a67644, S=1,       16

Nothing is decoded for it, so it works the same in every decode mode and sees every keyframe even
when only some are decoded. :func:`stderr_filter` reads the time base, the frame size and each
keyframe's ``pts``, and keeps those lines out of the stderr tail (failure reasons stay ffmpeg's
own warnings and errors). :class:`KeyframeIntervals` turns keyframe times into an interval: the
median of the recent gaps, which ignores a lost keyframe or a timestamp jump.
"""

from __future__ import annotations

import re
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

# Gaps remembered: a few GOPs, so a changed GOP shows within seconds to a minute.
INTERVAL_WINDOW = 8
# Gaps needed before an interval is told: many cameras send an extra keyframe when a client
# connects, so the first gap of a run is often short (the test camera's: 2.133 s or 1.867 s
# against a 2 s GOP). The median of three outvotes it.
MIN_GAPS = 3
# Gaps outside this range are not keyframe intervals (a reset of the timestamps, a pause).
MIN_INTERVAL_S = 0.01
MAX_INTERVAL_S = 60.0

_TIME_BASE = re.compile(r"^#tb 0: (\d+)/(\d+)\s*$")
_DIMENSIONS = re.compile(r"^#dimensions 0: (\d+)x(\d+)\s*$")
# stream index, dts, pts, duration, size, checksum[, side data]
_PACKET = re.compile(r"^0,\s*(-?\d+),\s*(-?\d+),\s*-?\d+,\s*\d+,\s*0x[0-9a-f]+")
_HEADER = re.compile(r"^#[a-z_]+(?: \d+)?:\s")


def keyframe_log_args() -> list[str]:
    """The second output of a sampler command: one ``framecrc`` line per keyframe on stderr."""
    return [
        "-map", "0:v:0", "-c", "copy", "-bsf:v", "noise=drop=not(key)",
        "-flush_packets", "1", "-f", "framecrc", "pipe:2",
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class FrameSize:
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


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
        """The median gap between keyframes (of two middle ones the longer: mistaking a GOP for
        longer costs CPU, for shorter it costs frames); None before ``MIN_GAPS`` gaps."""
        return statistics.median_high(self._gaps) if len(self._gaps) >= MIN_GAPS else None


def stderr_filter(
    on_keyframe: Callable[[float], None],
    on_size: Callable[[FrameSize], None] | None = None,
) -> Callable[[str], str | None]:
    """A :class:`~heldar.media.process.StderrRing` line hook for :func:`keyframe_log_args`.

    ``on_keyframe`` gets each keyframe's presentation time in seconds; ``on_size`` the coded
    frame size, once per run. Every other line is kept as it is.
    """
    time_base = Fraction(0)

    def hook(line: str) -> str | None:
        nonlocal time_base
        if packet := _PACKET.match(line):
            if time_base:
                on_keyframe(float(int(packet.group(2)) * time_base))
            return None
        if not line.startswith("#"):
            return line
        if tb := _TIME_BASE.match(line):
            time_base = Fraction(int(tb.group(1)), max(1, int(tb.group(2))))
        elif (size := _DIMENSIONS.match(line)) and on_size is not None:
            frame_size = FrameSize(int(size.group(1)), int(size.group(2)))
            if frame_size.pixels:  # 0x0: the stream did not tell before its header was written
                on_size(frame_size)
        return None if _HEADER.match(line) else line

    return hook

"""Keyframe intervals from ffmpeg's log, and the decode-mode decision."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from heldar.config import DecodeMode
from heldar.media.keyframes import KeyframeIntervals, stderr_filter
from heldar.media.process import StderrRing
from heldar.services.sampler_manager import effective_mode

SHOWINFO = (
    "[Parsed_showinfo_2 @ 0x55c393647400] [info] n:   3 pts: 324000 pts_time:{t}     "
    "pos:    -1 fmt:yuv420p sar:1/1 s:640x360 i:P iskey:1 type:I checksum:4CE9C729"
)


def test_info_lines_feed_keyframes_and_stay_out_of_the_tail() -> None:
    seen: list[float] = []
    ring = StderrRing(line_hook=stderr_filter(seen.append))
    lines = [
        "[info] Input #0, rtsp, from 'rtsp://u:secret@127.0.0.1/x':",
        SHOWINFO.format(t="1.8"),
        "[Parsed_showinfo_2 @ 0x55c393647400] [info] color_range:unknown",
        SHOWINFO.format(t="3.8"),
        "[rtsp @ 0x55d5c] [error] method DESCRIBE failed: 404 Not Found",
        "[h264 @ 0x55] [warning] concealing 12 errors",
        "an untagged line",
    ]
    ring.feed(("\n".join(lines) + "\n").encode())
    assert seen == [1.8, 3.8]
    assert ring.text().splitlines() == [
        "[rtsp @ 0x55d5c] method DESCRIBE failed: 404 Not Found",
        "[h264 @ 0x55] concealing 12 errors",
        "an untagged line",
    ]


def test_interval_is_the_median_gap() -> None:
    intervals = KeyframeIntervals()
    assert intervals.interval_s is None
    for t in (10.0, 12.0, 14.0, 18.0, 20.0, 0.5, 2.5, 4.5):  # a lost keyframe, a timestamp reset
        intervals.add(t)
    assert intervals.interval_s == 2.0


@given(gop_s=st.floats(0.2, 10), jitter=st.lists(st.floats(-0.01, 0.01), min_size=3, max_size=20))
def test_interval_tracks_a_jittered_gop(gop_s: float, jitter: list[float]) -> None:
    intervals = KeyframeIntervals()
    for n, noise in enumerate(jitter):
        intervals.add(n * gop_s + noise)
    assert intervals.interval_s is not None
    assert abs(intervals.interval_s - gop_s) <= 0.02 + 1e-9


def test_effective_mode() -> None:
    auto, keyframes, full = DecodeMode.AUTO, DecodeMode.KEYFRAMES, DecodeMode.ALL
    assert effective_mode(auto, 0.5, None) is full  # unknown GOP: decode all, learn it
    assert effective_mode(auto, 0.5, 2.0) is keyframes  # at the keyframe rate
    assert effective_mode(auto, 0.2, 2.0) is keyframes
    assert effective_mode(auto, 0.51, 2.0) is keyframes  # within the slack for jitter
    assert effective_mode(auto, 1.0, 2.0) is full  # above it
    assert effective_mode(keyframes, 5.0, 2.0) is keyframes
    assert effective_mode(full, 0.1, 2.0) is full

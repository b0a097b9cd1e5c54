"""Keyframe intervals and frame size from ffmpeg's keyframe log; the decode-mode decisions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from heldar.config import DecodeMode
from heldar.media.keyframes import (
    FrameSize,
    KeyframeIntervals,
    stderr_filter,
)
from heldar.media.process import StderrRing
from heldar.services.sampler_manager import decode_threads, effective_mode


def test_keyframe_packet_lines_feed_times_and_size_and_stay_out_of_the_tail() -> None:
    times: list[float] = []
    sizes: list[FrameSize] = []
    ring = StderrRing(line_hook=stderr_filter(times.append, sizes.append))
    lines = [
        "#extradata 0:       40, 0xb02a08f2",
        "#software: Lavf59.27.100",
        "#tb 0: 1/90000",
        "#media_type 0: video",
        "#codec_id 0: h264",
        "#dimensions 0: 1920x1080",
        "#sar 0: 1/1",
        "0,     158400,     158400,     3600,    24117, 0x19a67644, S=1,       16",
        "[rtsp @ 0x55d5c] method DESCRIBE failed: 404 Not Found",
        "0,     338400,     338400,     3600,    24409, 0x0e09c8ba",
        "[h264 @ 0x55] concealing 12 errors",
        "#an odd line that is not a header of ours",
    ]
    ring.feed(("\n".join(lines) + "\n").encode())
    assert times == [1.76, 3.76]
    assert sizes == [FrameSize(1920, 1080)]
    assert ring.text().splitlines() == [
        "[rtsp @ 0x55d5c] method DESCRIBE failed: 404 Not Found",
        "[h264 @ 0x55] concealing 12 errors",
        "#an odd line that is not a header of ours",
    ]


def test_an_unknown_size_is_not_reported() -> None:
    sizes: list[FrameSize] = []
    hook = stderr_filter(lambda _t: None, sizes.append)
    assert hook("#dimensions 0: 0x0") is None
    assert sizes == []


def test_packets_before_the_time_base_are_not_guessed() -> None:
    times: list[float] = []
    hook = stderr_filter(times.append)
    assert hook("0,     158400,     158400,     3600,    24117, 0x19a67644") is None
    assert times == []


def test_interval_is_the_median_gap() -> None:
    intervals = KeyframeIntervals()
    assert intervals.interval_s is None
    for t in (10.0, 12.0, 14.0, 18.0, 20.0, 0.5, 2.5, 4.5):  # a lost keyframe, a timestamp reset
        intervals.add(t)
    assert intervals.interval_s == 2.0


def test_an_extra_keyframe_at_connect_does_not_make_the_interval() -> None:
    """Cameras often send a keyframe to a new client, out of their GOP schedule."""
    intervals = KeyframeIntervals()
    for t in (0.0, 0.133, 2.133):  # the extra keyframe, then the schedule
        intervals.add(t)
    assert intervals.interval_s is None  # two gaps are not enough to tell which one is typical
    intervals.add(4.133)
    assert intervals.interval_s == 2.0
    intervals.add(6.133)
    assert intervals.interval_s == 2.0


@given(gop_s=st.floats(0.2, 10), jitter=st.lists(st.floats(-0.01, 0.01), min_size=4, max_size=20))
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


def test_decode_threads() -> None:
    keyframes, full = DecodeMode.KEYFRAMES, DecodeMode.ALL
    assert decode_threads(full, None) == 1  # unknown: one thread until the size says more
    assert decode_threads(full, 1920 * 1080) == 1
    assert decode_threads(full, 2560 * 1440) == 0  # ffmpeg's threading keeps a big one fresh
    assert decode_threads(keyframes, 3840 * 2160) == 1

"""Which keyframes a feed outputs (KeyframePicker) and RTP time (TimestampUnwrapper)."""

from __future__ import annotations

from itertools import accumulate

from hypothesis import given
from hypothesis import strategies as st

from heldar.media.feed import EARLY_SHARE, KeyframePicker, TimestampUnwrapper

fps_values = st.sampled_from([0.1, 0.2, 0.5, 1.0, 2.0, 5.0])
gaps_s = st.lists(st.floats(0.01, 10.0), min_size=1, max_size=200)


def picked(fps: float, times_s: list[float]) -> list[float]:
    picker = KeyframePicker(fps)
    return [t for t in times_s if picker.take(t)]


@given(fps_values, gaps_s)
def test_never_more_than_the_rate_over_any_stretch(fps: float, gaps: list[float]) -> None:
    times = list(accumulate(gaps))
    taken = picked(fps, times)
    interval_s = 1 / fps
    slack_s = 2 * EARLY_SHARE * interval_s
    for index, start in enumerate(taken):  # n steps span at least n intervals, less the slack
        for steps, end in enumerate(taken[index + 1 :], start=1):
            assert end - start >= steps * interval_s - slack_s - 1e-9


@given(fps_values, st.lists(st.floats(-0.12, 0.12), min_size=2, max_size=100))
def test_keyframes_one_interval_apart_all_pass_despite_jitter(
    fps: float, jitter: list[float]
) -> None:
    """A 1 s GOP at 1 fps, jitter under an eighth of it: a grid would drop every other one."""
    interval_s = 1 / fps
    times = [i * interval_s + j * interval_s for i, j in enumerate(jitter)]
    assert picked(fps, times) == times


@given(fps_values, st.integers(1, 6))
def test_a_gop_longer_than_the_interval_passes_every_keyframe(fps: float, factor: int) -> None:
    times = [i * factor / fps for i in range(30)]
    assert picked(fps, times) == times


def test_a_faster_keyframe_rate_is_thinned_to_the_sampling_rate() -> None:
    times = [i * 0.2 for i in range(51)]  # 5 keyframes a second for 10 s
    taken = picked(1.0, times)
    assert len(taken) == 11 and taken[:3] == [0.0, 0.8, 1.8]


def test_after_a_pause_no_burst_and_a_reset_starts_afresh() -> None:
    picker = KeyframePicker(1.0)
    assert picker.take(10.0)
    assert picker.take(60.0)  # a 50 s pause: take it...
    assert not picker.take(60.2)  # ...but no catching up
    assert picker.take(61.0)
    assert picker.take(0.5)  # timestamps went backwards: a camera restart


def test_rtp_timestamps_unwrap_past_32_bits_and_step_back() -> None:
    unwrap = TimestampUnwrapper()
    top = (1 << 32) - 1000
    assert unwrap(top) == 0
    assert unwrap(2600) == 3600  # wrapped
    assert unwrap(2600 + 90000) == 93600
    assert unwrap(2600) == 3600  # a step backwards, not a wrap forwards

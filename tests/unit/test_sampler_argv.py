"""The sampler's commands: which processes, which decode options, and when the keyframe log runs."""

from __future__ import annotations

import pytest

from heldar.config import DecodeMode
from heldar.media.urls import StreamUrl
from heldar.services.budget import SamplerKey
from heldar.services.sampler import (
    FIRST_ANALYZE_S,
    MAX_ANALYZE_S,
    SamplerSpec,
    build_argv,
    longer_analysis_s,
)
from heldar.services.sampler_manager import gop_prefix

URL = StreamUrl("rtsp://user:pw@127.0.0.1:8554/cam")


def spec(mode: DecodeMode, threads: int = 1) -> SamplerSpec:
    return SamplerSpec(SamplerKey("cam", "sub"), URL, 0.5, 640, mode, threads)


@pytest.mark.parametrize("log", [True, False])
def test_keyframes_run_a_receiver_into_a_one_thread_decoder(log: bool) -> None:
    command = build_argv("ffmpeg", spec(DecodeMode.KEYFRAMES), 5.0, log_keyframes=log)
    assert command.receiver is not None
    receiver, decoder = " ".join(command.receiver), " ".join(command.decoder)
    assert "-c copy -bsf:v noise=drop=if(key" in receiver and "-f nut pipe:1" in receiver
    assert receiver.count("-f framecrc pipe:2") == int(log)
    assert "-i pipe:0" in decoder and "-threads 1" in decoder and "-copyts" in decoder
    assert "rtsp://" not in decoder and "-skip_frame" not in decoder


@pytest.mark.parametrize("log", [True, False])
def test_old_ffmpeg_falls_back_to_skip_frame_in_one_process(log: bool) -> None:
    command = build_argv(
        "ffmpeg", spec(DecodeMode.KEYFRAMES), 5.0, packet_drop=False, log_keyframes=log
    )
    assert command.receiver is None
    decoder = " ".join(command.decoder)
    assert "-skip_frame nokey" in decoder and "noise=drop=if" not in decoder
    assert decoder.count("-f framecrc pipe:2") == int(log)


@pytest.mark.parametrize(("threads", "log"), [(1, True), (0, False)])
def test_full_decode_is_one_process_with_the_planned_threads(threads: int, log: bool) -> None:
    command = build_argv("ffmpeg", spec(DecodeMode.ALL, threads), 5.0, log_keyframes=log)
    assert command.receiver is None
    decoder = " ".join(command.decoder)
    assert f"-threads {threads} -rtsp_transport tcp" in decoder
    assert "-filter_threads 1" in decoder and "-threads 1 -an" in decoder  # filters, encoder
    assert "-skip_frame" not in decoder and "noise=drop=if" not in decoder
    assert decoder.count("-f framecrc pipe:2") == int(log)


@pytest.mark.parametrize("mode", [DecodeMode.KEYFRAMES, DecodeMode.ALL])
def test_rtsp_is_probed_for_one_packet_unless_told_to_analyse(mode: DecodeMode) -> None:
    quick = build_argv("ffmpeg", spec(mode), 5.0)
    longer = build_argv("ffmpeg", spec(mode), 5.0, analyze_s=2.0)
    for command, expected in (
        (quick, "-probesize 32 -i rtsp"),
        (longer, "-analyzeduration 2000000 -i rtsp"),
    ):
        reader = " ".join(command.receiver or command.decoder)
        assert expected in reader
        assert reader.count("-analyzeduration") == ("-analyzeduration" in expected)


def test_the_analysis_grows_until_the_cap_then_gives_up() -> None:
    steps = [longer_analysis_s(None)]
    while (step := longer_analysis_s(steps[-1])) is not None:
        steps.append(step)
    assert steps[0] == FIRST_ANALYZE_S and steps[-1] == MAX_ANALYZE_S
    assert steps == sorted(set(steps))  # strictly longer each time, and it ends


@pytest.mark.parametrize("threads", [1, 0])
def test_full_decode_of_gop_prefixes_is_a_pipeline_with_the_planned_threads(threads: int) -> None:
    full = SamplerSpec(SamplerKey("cam", "sub"), URL, 2.0, 640, DecodeMode.ALL, threads, True)
    command = build_argv("ffmpeg", full, 5.0, log_keyframes=True)
    assert command.receiver is not None
    receiver, decoder = " ".join(command.receiver), " ".join(command.decoder)
    assert "-bsf:v noise=drop=if(key\\,if(" in receiver and "-f framecrc pipe:2" in receiver
    assert f"-threads {threads} -probesize 32 -copyts -f nut -i pipe:0" in decoder
    # An ffmpeg that cannot drop packets decodes everything in one process.
    assert build_argv("ffmpeg", full, 5.0, packet_drop=False).receiver is None


def test_only_auto_full_decode_of_rtsp_skips_gop_ends() -> None:
    rtsp, file = URL, StreamUrl("file:///srv/clip.mp4")
    auto, full, keyframes = DecodeMode.AUTO, DecodeMode.ALL, DecodeMode.KEYFRAMES
    assert gop_prefix(auto, full, rtsp)
    assert not gop_prefix(full, full, rtsp)  # "all" by hand decodes every frame
    assert not gop_prefix(auto, keyframes, rtsp)
    assert not gop_prefix(auto, full, file)  # a file's time base may not reach the filter
    assert not gop_prefix(auto, full, None)

"""The keyframe pipeline's parts with the real ffmpeg: the packet-dropping bitstream filter, and
``FfmpegPipeline`` (receiver | decoder) delivering frames, reporting failures and cleaning up."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import psutil
import pytest

from heldar.config import DecodeMode
from heldar.media.jpeg import jpeg_dimensions, read_frames
from heldar.media.keyframes import FrameSize, KeyframeIntervals, keyframe_log_args, stderr_filter
from heldar.media.pipeline import FfmpegPipeline
from heldar.media.urls import StreamUrl
from heldar.services.budget import SamplerKey
from heldar.services.sampler import (
    SamplerSpec,
    build_argv,
    gop_prefix_filter,
    keyframe_drop_filter,
)
from tests.support.binaries import ffmpeg_bin, ffprobe_bin

FRAME_RATE = 25
GOP_FRAMES = 5  # a keyframe every 0.2 s
CLIP_S = 10
DEADLINE_S = 20.0
FPS_OUT = 0.3  # cells of 3.33 s: a receiver timeline shifted by 1.3 s puts them off the GOP grid


def encode_clip(path: Path, *keyframes: str) -> Path:
    """10 s of H.264 at 25 fps with the ``keyframes`` options, no B-frames, in MPEG-TS: a 90 kHz
    time base like RTP's, which the receiver's NUT output keeps (see keyframe_drop_filter)."""
    subprocess.run(
        [ffmpeg_bin(), "-nostdin", "-hide_banner", "-loglevel", "error",
         "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={FRAME_RATE}", "-t", str(CLIP_S),
         "-c:v", "libx264", *keyframes, "-sc_threshold", "0", "-bf", "0",
         "-f", "mpegts", "-y", str(path)],
        check=True,
    )  # fmt: skip
    return path


def every_n_frames(gop_frames: int) -> list[str]:
    return ["-g", str(gop_frames), "-keyint_min", str(gop_frames)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode_clip(tmp_path_factory.mktemp("clip") / "gop5.ts", *every_n_frames(GOP_FRAMES))


def kept_packet_times(clip: Path, bsf: str) -> list[float]:
    """Presentation times of the packets that pass ``bsf``, from a framecrc of a stream copy."""
    out = subprocess.run(
        [ffmpeg_bin(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(clip),
         "-map", "0:v:0", "-c", "copy", "-bsf:v", bsf, "-f", "framecrc", "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    times: list[float] = []
    hook = stderr_filter(times.append)
    for line in out.splitlines():
        hook(line)
    return times


@pytest.mark.parametrize("fps", [2.0, 0.5, 0.3])
def test_drop_filter_keeps_the_first_keyframe_of_each_grid_cell(clip: Path, fps: float) -> None:
    every_keyframe = kept_packet_times(clip, "noise=drop=not(key)")
    assert len(every_keyframe) == CLIP_S * FRAME_RATE // GOP_FRAMES
    kept = kept_packet_times(clip, keyframe_drop_filter(fps))
    expected: list[float] = []
    for t in every_keyframe:  # the same rule, written plainly
        if not expected or int(t * fps) != int(expected[-1] * fps):
            expected.append(t)
    assert kept == expected
    assert len(kept) == len({int(t * fps) for t in every_keyframe})  # one per cell, none missed


LONG_GOP_FRAMES = 20  # a keyframe every 0.8 s: full decode above 1.25 fps


@pytest.fixture(scope="module")
def long_gop_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "gop20.ts"
    return encode_clip(path, *every_n_frames(LONG_GOP_FRAMES))


def gops(times: list[float], keyframes: list[float]) -> list[list[float]]:
    """``times`` split at each keyframe (the packets before the first one dropped)."""
    out: list[list[float]] = []
    for t in times:
        if t in keyframes:
            out.append([])
        if out:
            out[-1].append(t)
    return out


def decoded_frames(clip: Path, bsf: str) -> dict[str, str]:
    """Every frame decoded from the clip's packets that pass ``bsf``: checksum by timestamp."""
    copy = subprocess.Popen(
        [ffmpeg_bin(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(clip),
         "-map", "0:v:0", "-c", "copy", "-bsf:v", bsf, "-f", "nut", "pipe:1"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    decoded = subprocess.run(
        [ffmpeg_bin(), "-nostdin", "-hide_banner", "-loglevel", "error", "-copyts",
         "-f", "nut", "-i", "pipe:0", "-fps_mode", "passthrough", "-f", "framecrc", "-"],
        stdin=copy.stdout, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert copy.wait() == 0
    rows = [line.split(",") for line in decoded.splitlines() if line.startswith("0,")]
    return {row[2].strip(): row[5].strip() for row in rows}


def assert_gop_prefixes_decode_exactly(clip: Path, bsf: str) -> list[float]:
    """The packets ``bsf`` keeps are a prefix of each GOP, and every frame decoded from them is
    bit-identical to the same frame of a full decode (a dropped reference would change it).
    Returns the kept packets' times."""
    every = kept_packet_times(clip, "null")
    keyframes = kept_packet_times(clip, "noise=drop=not(key)")
    kept = kept_packet_times(clip, bsf)
    for whole, prefix in zip(gops(every, keyframes), gops(kept, keyframes), strict=True):
        assert prefix == whole[: len(prefix)]
    full, prefixes = decoded_frames(clip, "null"), decoded_frames(clip, bsf)
    assert len(prefixes) == len(kept)
    assert {pts: full[pts] for pts in prefixes} == prefixes
    return kept


@pytest.mark.parametrize("fps", [2.0, 5.0])
def test_gop_prefix_filter_keeps_what_output_frames_need_and_decodes_them_exactly(
    long_gop_clip: Path, fps: float
) -> None:
    kept = assert_gop_prefixes_decode_exactly(long_gop_clip, gop_prefix_filter(fps))
    every = kept_packet_times(long_gop_clip, "null")
    # The decoder outputs the first frame of each cell: every cell still has one.
    assert {int(t * fps) for t in kept} == {int(t * fps) for t in every}
    assert len(kept) < (0.6 if fps == 2.0 else 0.9) * len(every), (len(kept), len(every))


def test_a_longer_gop_costs_frames_never_correctness(tmp_path: Path) -> None:
    """Keyframes 0.8 s apart, then 1.6 s: the filter expects the first long GOP's keyframe too
    early and gives up on it, so cells go without a frame, but what is decoded is exact; two
    gaps later it knows the new GOP."""
    keyframes_s = ",".join(f"{t:g}" for t in (0, 0.8, 1.6, 2.4, 4.0, 5.6, 7.2, 8.8))
    clip = encode_clip(tmp_path / "gop-change.ts", "-force_key_frames", keyframes_s, "-g", "1000")
    fps = 5.0
    kept = assert_gop_prefixes_decode_exactly(clip, gop_prefix_filter(fps))
    every = kept_packet_times(clip, "null")
    start = every[0]
    missing = {int(t * fps) for t in every} - {int(t * fps) for t in kept}
    assert missing  # the first 1.6 s GOP was cut where a 0.8 s one would have ended
    assert all((t - start) < 4.0 for t in every if int(t * fps) in missing), missing


def test_keyframe_log_gives_interval_and_size(clip: Path) -> None:
    intervals = KeyframeIntervals()
    sizes: list[FrameSize] = []
    hook = stderr_filter(intervals.add, sizes.append)
    result = subprocess.run(
        [ffmpeg_bin(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(clip),
         *keyframe_log_args()],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for line in result.stderr.splitlines():
        assert hook(line) is None, line  # nothing of the log reaches the stderr tail
    assert intervals.interval_s == pytest.approx(GOP_FRAMES / FRAME_RATE, abs=0.005)
    assert sizes == [FrameSize(320, 240)]


def pipeline_argv(clip: Path, fps: float) -> tuple[list[str], list[str]]:
    """The sampler's keyframe commands for the clip, read once (not looped, not paced)."""
    spec = SamplerSpec(
        SamplerKey("cam", "sub"), StreamUrl(clip.as_uri()), fps, 160, DecodeMode.KEYFRAMES
    )
    command = build_argv(ffmpeg_bin(), spec, 5.0)
    assert command.receiver is not None
    receiver = list(command.receiver)
    start = receiver.index("-re")
    del receiver[start : start + 3]  # "-re -stream_loop -1": the clip once, as fast as it goes
    return receiver, command.decoder


def test_receiver_sends_only_the_keyframes_to_decode(clip: Path) -> None:
    receiver, _ = pipeline_argv(clip, fps=1.0)
    nut = subprocess.run(receiver, capture_output=True, check=True).stdout
    probe = subprocess.run(
        [ffprobe_bin(), "-v", "error", "-count_packets", "-show_entries",
         "stream=nb_read_packets", "-of", "csv=p=0", "-"],
        input=nut, capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert int(probe) == CLIP_S  # 10 of 250 packets: a keyframe per 1 s cell


@pytest.mark.parametrize("offset_s", [0.0, 1.3])
async def test_pipeline_delivers_one_jpeg_per_cell_and_reaps_both(
    clip: Path, offset_s: float
) -> None:
    """The decoder's grid is the receiver's: a stream whose first keyframe is not at 0 (as on
    RTSP) loses no frame to a second grid with another origin."""
    receiver, decoder = pipeline_argv(clip, fps=FPS_OUT)
    at = receiver.index("-i")
    receiver[at:at] = ["-itsoffset", f"{offset_s:g}"]
    keyframes: list[float] = []
    pipeline = await FfmpegPipeline.start(
        receiver, decoder, label="test", receiver_stderr_hook=stderr_filter(keyframes.append)
    )
    pids = pipeline.pids
    try:
        async with asyncio.timeout(DEADLINE_S):
            frames = [frame async for frame in read_frames(pipeline.stdout)]
    finally:
        await pipeline.stop(1.0)
    assert len(keyframes) == CLIP_S * FRAME_RATE // GOP_FRAMES  # the log saw every keyframe
    cells = {int(t * FPS_OUT) for t in keyframes}
    assert len(frames) == len(cells)  # a keyframe in each cell, each decoded once
    assert all(jpeg_dimensions(frame) == (160, 120) for frame in frames)
    assert pipeline.receiver.returncode == 0 and pipeline.decoder.returncode == 0
    assert not any(psutil.pid_exists(pid) for pid in pids)


async def test_a_failing_receiver_ends_the_decoder_and_is_the_reason(tmp_path: Path) -> None:
    receiver, decoder = pipeline_argv(tmp_path / "missing.mkv", fps=1.0)
    pipeline = await FfmpegPipeline.start(receiver, decoder, label="test")
    try:
        async with asyncio.timeout(DEADLINE_S):
            assert [frame async for frame in read_frames(pipeline.stdout)] == []
            await pipeline.decoder.wait()
    finally:
        await pipeline.stop(1.0)
    assert "missing.mkv" in pipeline.failure_reason()
    assert pipeline.receiver.returncode not in (None, 0)


async def test_a_dead_decoder_ends_the_receiver(clip: Path) -> None:
    receiver, decoder = pipeline_argv(clip, fps=1.0)
    looping = [*receiver[:3], "-re", "-stream_loop", "-1", *receiver[3:]]  # never ends by itself
    pipeline = await FfmpegPipeline.start(looping, decoder, label="test")
    try:
        psutil.Process(pipeline.decoder.pid).kill()
        async with asyncio.timeout(DEADLINE_S):
            await pipeline.receiver.wait()  # a broken pipe, not our stop()
    finally:
        await pipeline.stop(1.0)
    assert pipeline.receiver.returncode not in (None, 0)

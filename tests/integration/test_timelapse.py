"""Time-lapse export (SPEC §6): the encoder, the API route and the CLI, with real ffmpeg.

Snapshots are solid grey JPEGs, one level each, so the order of the video's frames can be read
back from their centre pixels; some are grabs (640x360), some sampler frames (320x180).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import psutil
import pytest

import heldar.api.timelapse as timelapse_api
from heldar.clock import rfc3339
from heldar.config import Settings, load_settings
from heldar.kernel import Kernel
from heldar.media.timelapse import (
    MAX_TIMELAPSE_FRAMES,
    concat_list,
    encode_timelapse,
    output_size,
)
from heldar.services.cameras import CameraCreate
from heldar.services.snapshots import Shot, SnapshotSource
from tests.support.binaries import ffmpeg_bin, ffmpeg_cmd, ffprobe_bin
from tests.support.images import lavfi_jpeg
from tests.support.kernel_server import KernelServer
from tests.support.polling import POLL_S

CAMERA = "cam"
GRAB_SIZE = (640, 360)
SAMPLER_SIZE = (320, 180)
# Grey levels in time order; far enough apart that JPEG + H.264 never swap neighbours.
LEVELS = (30, 60, 90, 120, 150, 180, 210)
SAMPLER_INDEXES = frozenset({2, 5})  # these two are smaller sampler frames
OUTSIDE_LEVEL = 250  # snapshots just outside the range: must not appear
STEP = timedelta(minutes=1)
LEVEL_TOLERANCE = 12  # lossy twice (JPEG, then H.264 at CRF 23)
CLI_TIMEOUT_S = 120
# ffmpeg reports its first frames within a second or two even on a loaded machine.
ENCODING_START_TIMEOUT_S = 30
# The server deletes the temp file right after the last byte is sent.
TEMP_FILE_GONE_TIMEOUT_S = 10


@dataclass(frozen=True)
class Probe:
    codec: str
    width: int
    height: int
    frames: int
    rate: str
    duration_s: float
    pts: list[int]


def jpeg(level: int, size: tuple[int, int]) -> bytes:
    colour = f"0x{level:02x}{level:02x}{level:02x}"
    return lavfi_jpeg(f"color=c={colour}:s={size[0]}x{size[1]}")


def probe(path: Path) -> Probe:
    result = subprocess.run(
        [ffprobe_bin(), "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=codec_name,width,height,nb_read_frames,avg_frame_rate,duration",
         "-show_entries", "packet=pts", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    info = json.loads(result.stdout)
    stream = info["streams"][0]
    return Probe(
        codec=stream["codec_name"],
        width=stream["width"],
        height=stream["height"],
        frames=int(stream["nb_read_frames"]),
        rate=stream["avg_frame_rate"],
        duration_s=float(stream["duration"]),
        pts=sorted(int(p["pts"]) for p in info["packets"]),
    )


def centre_levels(path: Path) -> list[int]:
    """The grey level at the centre of each frame, in display order."""
    raw = subprocess.run(
        [*ffmpeg_cmd(), "-i", str(path), "-vf", "crop=8:8,scale=1:1,format=gray",
         "-f", "rawvideo", "pipe:1"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return list(raw)


def assert_levels(path: Path, expected: Sequence[int]) -> None:
    got = centre_levels(path)
    assert len(got) == len(expected), got
    for level, want in zip(got, expected, strict=True):
        assert abs(level - want) <= LEVEL_TOLERANCE, (got, expected)


def size_of(index: int) -> tuple[int, int]:
    return SAMPLER_SIZE if index in SAMPLER_INDEXES else GRAB_SIZE


async def seed(kernel: Kernel, start: datetime) -> None:
    """LEVELS at ``start + i * STEP``, and one snapshot just before and one just after."""
    await kernel.cameras.create(
        CameraCreate(id=CAMERA, name="Cam", main_stream_url="rtsp://127.0.0.1:8554/x")
    )
    shots = [(start - timedelta(seconds=1), OUTSIDE_LEVEL, GRAB_SIZE)]
    shots += [(start + i * STEP, level, size_of(i)) for i, level in enumerate(LEVELS)]
    shots.append(
        (start + (len(LEVELS) - 1) * STEP + timedelta(seconds=1), OUTSIDE_LEVEL, GRAB_SIZE)
    )
    for taken_at, level, size in shots:
        source = SnapshotSource.GRAB if size == GRAB_SIZE else SnapshotSource.SAMPLER
        shot = Shot(await asyncio.to_thread(jpeg, level, size), *size, taken_at, source)
        await kernel.snapshots.store(CAMERA, shot, taken_at=taken_at)


def range_start(now: datetime) -> datetime:
    """Recent (retention keeps it), whole seconds (exact boundaries in RFC 3339 with ms)."""
    return now.replace(microsecond=0) - timedelta(hours=1)


def timelapse_url(**params: object) -> str:
    return f"/api/v1/cameras/{CAMERA}/timelapse.mp4?{urlencode(params)}"


def temp_dir_entries(settings: Settings) -> list[str]:
    temp_dir = settings.temp_dir
    return sorted(p.name for p in temp_dir.iterdir()) if temp_dir.exists() else []


# The encoder -------------------------------------------------------------------------------


def test_output_size_takes_the_largest_even_and_caps_at_4k() -> None:
    assert output_size([(320, 180), (641, 361), (640, 360)]) == (640, 360)
    assert output_size([(7680, 4320)]) == (3840, 2160)
    assert output_size([(1, 1)]) == (2, 2)
    with pytest.raises(ValueError, match="no image sizes"):
        output_size([])


def test_concat_list_quotes_paths() -> None:
    text = concat_list([Path("/data/it's.jpg")])
    assert text == "ffconcat version 1.0\nfile '/data/it'\\''s.jpg'\n"
    with pytest.raises(ValueError, match="line break"):
        concat_list([Path("/data/a\nb.jpg")])


async def test_encoder_writes_one_frame_per_image_with_distinct_timestamps(
    tmp_path: Path,
) -> None:
    # 60 fps: the concat demuxer's own 1/25 s time base would give frames equal timestamps.
    images = []
    for i, level in enumerate(LEVELS):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(jpeg(level, size_of(i)))
        images.append(path)
    progress: list[tuple[int, int]] = []
    out = tmp_path / "out.mp4"
    encoded = await encode_timelapse(
        ffmpeg_bin(),
        images,
        out,
        fps=60,
        frame_size=output_size(size_of(i) for i in range(len(LEVELS))),
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert (encoded.frames, encoded.width, encoded.height) == (len(LEVELS), *GRAB_SIZE)
    probed = probe(out)
    assert (probed.codec, probed.width, probed.height) == ("h264", *GRAB_SIZE)
    assert probed.frames == len(LEVELS)
    assert probed.rate == "60/1"
    assert probed.duration_s == pytest.approx(len(LEVELS) / 60, abs=1e-3)
    assert len(set(probed.pts)) == len(LEVELS)
    assert_levels(out, LEVELS)
    assert progress[0] == (0, len(LEVELS)) and progress[-1] == (len(LEVELS), len(LEVELS))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".jpg")) == [
        "out.mp4"
    ]  # no list file left


async def test_cancelling_the_encoder_stops_ffmpeg_and_removes_its_list(tmp_path: Path) -> None:
    image = tmp_path / "big.jpg"
    image.write_bytes(jpeg(100, (1920, 1080)))
    out = tmp_path / "out.mp4"
    encoding = asyncio.Event()

    def on_progress(done: int, _total: int) -> None:
        if done > 0:
            encoding.set()

    # Other tests' ffmpeg (the session camera's keeper) are children of this process too.
    others = {c.pid for c in psutil.Process().children()}
    # Minutes of work at 1080p: it is still running when cancelled.
    task = asyncio.create_task(
        encode_timelapse(ffmpeg_bin(), [image] * MAX_TIMELAPSE_FRAMES, out, fps=10,
                         on_progress=on_progress)
    )  # fmt: skip
    await asyncio.wait_for(encoding.wait(), ENCODING_START_TIMEOUT_S)
    (child,) = [
        c for c in psutil.Process().children() if "ffmpeg" in c.name() and c.pid not in others
    ]
    assert any(p.name.endswith(".ffconcat") for p in tmp_path.iterdir())

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert not child.is_running()  # stopped and reaped (a zombie would still "run")
    assert not any(p.name.endswith(".ffconcat") for p in tmp_path.iterdir())


# The API route -----------------------------------------------------------------------------


async def test_api_encodes_the_snapshots_in_range_oldest_first(
    kernel: Kernel, client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    start = range_start(kernel.clock.now())
    end = start + (len(LEVELS) - 1) * STEP
    await seed(kernel, start)

    response = await client.get(
        timelapse_url(**{"from": rfc3339(start), "to": rfc3339(end)}, fps=5)
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    stamp = f"{start:%Y%m%dT%H%M%S}Z_{end:%Y%m%dT%H%M%S}Z"
    assert f'filename="{CAMERA}_{stamp}.mp4"' in response.headers["content-disposition"]
    video = tmp_path / "api.mp4"
    video.write_bytes(response.content)
    probed = probe(video)
    assert (probed.codec, probed.width, probed.height) == ("h264", *GRAB_SIZE)
    assert probed.frames == len(LEVELS)  # inclusive bounds; the two outside are left out
    assert probed.rate == "5/1"
    assert probed.duration_s == pytest.approx(len(LEVELS) / 5, abs=1e-3)
    assert_levels(video, LEVELS)
    assert temp_dir_entries(settings) == []
    assert kernel.media_jobs.running == 0


async def test_bad_ranges_and_fps_are_422_naming_the_field(
    kernel: Kernel, client: httpx.AsyncClient
) -> None:
    await kernel.cameras.create(
        CameraCreate(id=CAMERA, name="Cam", main_stream_url="rtsp://127.0.0.1:8554/x")
    )
    t = "2026-01-02T03:04:05Z"
    cases = [
        ({"from": t, "to": t}, "from"),
        ({"from": "2026-01-02T04:00:00Z", "to": t}, "from"),
        ({"from": "2026-01-02T03:04:05"}, "from"),  # no zone
        ({"to": "yesterday"}, "to"),
        ({"fps": 0}, "fps"),
        ({"fps": 61}, "fps"),
        ({"fps": "fast"}, "fps"),
    ]
    for params, field in cases:
        response = await client.get(timelapse_url(**params))
        assert response.status_code == 422, (params, response.text)
        body = response.json()
        assert f"{field}:" in body["error"], body
        assert body["detail"][0]["loc"] == ["query", field], body


async def test_unknown_camera_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/cameras/nope/timelapse.mp4")
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


async def test_empty_range_is_404_saying_how_to_get_snapshots(
    kernel: Kernel, client: httpx.AsyncClient, settings: Settings
) -> None:
    start = range_start(kernel.clock.now())
    await seed(kernel, start)
    response = await client.get(
        timelapse_url(**{"from": rfc3339(start - STEP), "to": rfc3339(start - 2 * STEP / 3)})
    )
    assert response.status_code == 404
    message = response.json()["error"]
    assert "no snapshots" in message and "snapshot-schedules" in message
    assert temp_dir_entries(settings) == []


async def test_too_many_snapshots_is_422_asking_to_narrow_the_range(
    kernel: Kernel, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = range_start(kernel.clock.now())
    await seed(kernel, start)
    monkeypatch.setattr(timelapse_api, "MAX_TIMELAPSE_FRAMES", 3)
    end = start + (len(LEVELS) - 1) * STEP
    response = await client.get(timelapse_url(**{"from": rfc3339(start), "to": rfc3339(end)}))
    assert response.status_code == 422
    message = response.json()["error"]
    assert f"holds {len(LEVELS)} snapshots" in message and "narrow the range" in message


async def test_busy_media_jobs_answer_503_with_retry_after(
    kernel: Kernel, client: httpx.AsyncClient
) -> None:
    start = range_start(kernel.clock.now())
    await seed(kernel, start)
    end = start + (len(LEVELS) - 1) * STEP
    slots = [kernel.media_jobs.slot_now(f"test {i}") for i in range(kernel.media_jobs.limit)]
    for slot in slots:
        await slot.__aenter__()
    try:
        response = await client.get(timelapse_url(**{"from": rfc3339(start), "to": rfc3339(end)}))
    finally:
        for slot in slots:
            await slot.__aexit__(None, None, None)
    assert response.status_code == 503
    assert "Retry-After" in response.headers


async def test_a_failed_encode_is_503_and_leaves_no_temp_file(
    kernel: Kernel, client: httpx.AsyncClient, settings: Settings
) -> None:
    start = range_start(kernel.clock.now())
    await seed(kernel, start)
    end = start + (len(LEVELS) - 1) * STEP
    (middle,) = await kernel.snapshots.list(CAMERA, since=start + STEP, until=start + STEP, limit=2)
    kernel.snapshots.file_path(middle).write_bytes(b"not a jpeg")

    response = await client.get(timelapse_url(**{"from": rfc3339(start), "to": rfc3339(end)}))

    assert response.status_code == 503
    assert "ffmpeg" in response.json()["error"]
    assert temp_dir_entries(settings) == []
    assert kernel.media_jobs.running == 0


# The CLI, against a real kernel process ----------------------------------------------------


def test_cli_downloads_and_encodes_a_timelapse(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    start = range_start(datetime.now(UTC))
    end = start + (len(LEVELS) - 1) * STEP

    async def prepare() -> None:
        async with Kernel.open(load_settings({}, data_dir=data_dir)) as kernel:
            await seed(kernel, start)

    asyncio.run(prepare())
    out = tmp_path / "out" / "lapse.mp4"
    out.parent.mkdir()
    with KernelServer(data_dir) as server:
        result = subprocess.run(
            [sys.executable, "-m", "heldar", "timelapse", CAMERA,
             "--from", rfc3339(start), "--to", rfc3339(end), "--fps", "7",
             "--out", str(out), "--api", server.base_url],
            capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{len(LEVELS)} frames" in result.stdout
        probed = probe(out)
        assert (probed.codec, probed.width, probed.height) == ("h264", *GRAB_SIZE)
        assert probed.frames == len(LEVELS)
        assert probed.rate == "7/1"
        assert_levels(out, LEVELS)
        assert sorted(p.name for p in out.parent.iterdir()) == ["lapse.mp4"]

        # The route through uvicorn too: same video, and its temp file goes once it is sent.
        params = {"from": rfc3339(start), "to": rfc3339(end), "fps": 7}
        response = httpx.get(server.base_url + timelapse_url(**params), timeout=CLI_TIMEOUT_S)
        assert response.status_code == 200, response.text
        served = tmp_path / "served.mp4"
        served.write_bytes(response.content)
        assert probe(served).frames == len(LEVELS)
        temp_dir = load_settings({}, data_dir=data_dir).temp_dir
        deadline = time.monotonic() + TEMP_FILE_GONE_TIMEOUT_S
        while any(temp_dir.iterdir()):
            assert time.monotonic() < deadline, list(temp_dir.iterdir())
            time.sleep(POLL_S)  # poll interval of a deadline loop

        empty = subprocess.run(
            [sys.executable, "-m", "heldar", "timelapse", CAMERA,
             "--from", rfc3339(start - 2 * STEP), "--to", rfc3339(start - STEP),
             "--out", str(tmp_path / "out" / "none.mp4"), "--api", server.base_url],
            capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
        )  # fmt: skip
        assert empty.returncode == 1
        assert "no snapshots" in empty.stderr
        naive = subprocess.run(
            [sys.executable, "-m", "heldar", "timelapse", CAMERA,
             "--from", "2026-01-02T03:04:05", "--out", str(out), "--api", server.base_url],
            capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
        )  # fmt: skip
        assert naive.returncode == 2
        assert "--from" in naive.stderr and "time zone" in naive.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["lapse.mp4"]

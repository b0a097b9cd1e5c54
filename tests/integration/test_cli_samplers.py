"""``heldar samplers``: against a real ``heldar serve`` sampling the session RTSP camera, and
the rendering of what ffmpeg and the API put in its cells (no kernel needed for that one)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from heldar import cli
from heldar.cli import app
from tests.support.kernel_server import KernelServer
from tests.support.rtsp_camera import RtspTestCamera

runner = CliRunner()

FIRST_FRAME_S = 20.0
POLL_S = 0.05
# Nothing listens on port 1 of loopback: ffmpeg fails at once, and the sampler reports why.
DEAD_URL = "rtsp://127.0.0.1:1/none"


def test_samplers_command_prints_the_table_and_json(
    rtsp_camera: RtspTestCamera, tmp_path: Path
) -> None:
    with KernelServer(tmp_path / "data") as server:
        api = f"{server.base_url}/api/v1"
        empty = runner.invoke(app, ["samplers", "--api", server.base_url])
        assert empty.exit_code == 0, empty.output
        assert "no samplers" in empty.output

        for camera_id, url in (("front", rtsp_camera.url), ("dead", DEAD_URL)):
            body = {"id": camera_id, "name": camera_id, "main_stream_url": url}
            assert httpx.post(f"{api}/cameras", json=body).status_code == 201
            task = {"task_type": "motion", "fps": 5, "width": 320}
            created = httpx.post(f"{api}/cameras/{camera_id}/ai-tasks", json=task)
            assert created.status_code == 201, created.text

        deadline = time.monotonic() + FIRST_FRAME_S
        while True:
            rows = {row["camera_id"]: row for row in httpx.get(f"{api}/ai/samplers").json()}
            if rows["front"]["state"] == "sampling" and rows["dead"]["last_error"]:
                break
            assert time.monotonic() < deadline, f"samplers never settled: {rows}"
            time.sleep(POLL_S)  # poll interval of a deadline loop

        table = runner.invoke(app, ["samplers", "--api", server.base_url])
        assert table.exit_code == 0, table.output
        cells = {
            line.split()[0]: line.split() for line in table.output.splitlines() if line.strip()
        }
        assert cells["front"][:5] == ["front", "sub", "sampling", "5/5", "320"], table.output
        assert cells["dead"][:5] == ["dead", "sub", rows["dead"]["state"], "5/5", "320"]
        # The error is listed in full below the table; ffmpeg's "[tag @ 0x...]" survives.
        error_line = next(line for line in table.output.splitlines() if "dead/sub:" in line)
        assert str(rows["dead"]["last_error"]) in error_line

        as_json = runner.invoke(app, ["samplers", "--json", "--api", server.base_url])
        assert as_json.exit_code == 0, as_json.output
        listed = {row["camera_id"]: row for row in json.loads(as_json.output)}
        assert listed["front"]["state"] == "sampling"
        assert (listed["front"]["fps"], listed["front"]["width"]) == (5.0, 320)
        assert listed["dead"]["pid"] is None or isinstance(listed["dead"]["pid"], int)

    down = runner.invoke(app, ["samplers", "--api", server.base_url])
    assert down.exit_code == 1
    assert "cannot reach the kernel" in down.output


def test_table_shows_ffmpeg_errors_and_urls_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich reads "[rtsp @ 0x5d]" or "[fe80::1]" as markup unless escaped; they must survive."""
    error = "[rtsp @ 0x55d5c] method DESCRIBE failed: 404 Not Found"
    rows = [
        {"camera_id": "yard", "profile": "main", "state": "offline", "fps": 2 / 3,
         "requested_fps": 3.0, "width": 320, "requested_width": 320, "frame_age_ms": 45_000,
         "frames_total": 12, "restarts": 3, "last_error": error, "pid": None},
        {"camera_id": "gate", "profile": "sub", "state": "budget_exhausted", "fps": None,
         "requested_fps": 3.0, "width": 1280, "requested_width": 1280, "frame_age_ms": None,
         "frames_total": 0, "restarts": 0, "last_error": None, "pid": None},
    ]  # fmt: skip
    monkeypatch.setattr(cli.base, "request", lambda *_args, **_kw: rows)
    result = runner.invoke(app, ["samplers"])
    assert result.exit_code == 0, result.output
    cells = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    assert cells["yard"] == ["yard", "main", "offline", "0.67/3", "320", "45.0", "s", "12", "3"]
    assert cells["gate"] == ["gate", "sub", "budget_exhausted", "-/3", "1280", "-", "0", "0"]
    assert f"yard/main: {error}" in result.output

    camera = {"id": "v6", "stream_urls": {"main": "rtsp://***@[fe80::1]:554/Streaming/101"}}
    monkeypatch.setattr(cli.base, "request", lambda *_args, **_kw: camera)
    added = runner.invoke(app, ["camera", "add", "v6", "--address", "fe80::1"])
    assert added.exit_code == 0, added.output
    assert "rtsp://***@[fe80::1]:554/Streaming/101" in added.output

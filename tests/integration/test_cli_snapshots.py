"""``heldar snapshot`` and ``heldar schedule ...`` against a real ``heldar serve`` and the session
RTSP camera."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from heldar.cli import app
from heldar.media.jpeg import jpeg_dimensions
from tests.support.kernel_server import KernelServer
from tests.support.rtsp_camera import RtspTestCamera

runner = CliRunner()

FIRST_SNAPSHOT_S = 20.0
POLL_S = 0.05


def test_snapshot_and_schedule_commands(rtsp_camera: RtspTestCamera, tmp_path: Path) -> None:
    with KernelServer(tmp_path / "data") as server:
        api = ["--api", server.base_url]
        body = {"id": "gate", "name": "Gate", "main_stream_url": rtsp_camera.url}
        assert httpx.post(f"{server.base_url}/api/v1/cameras", json=body).status_code == 201

        picture = tmp_path / "now.jpg"
        taken = runner.invoke(app, ["snapshot", "gate", "--out", str(picture), "--store", *api])
        assert taken.exit_code == 0, taken.output
        assert "640x360 from the grab" in taken.output
        assert re.search(r"stored as snap_[0-9a-f]{32}", taken.output)
        assert jpeg_dimensions(picture.read_bytes()) == (640, 360)

        bad = runner.invoke(app, ["schedule", "add", "gate", "--every", "2", *api])
        assert bad.exit_code == 1
        assert "interval_seconds" in bad.output and "HTTP 422" in bad.output

        added = runner.invoke(app, ["schedule", "add", "gate", "--every", "3600", "--json", *api])
        assert added.exit_code == 0, added.output
        schedule_id = json.loads(added.output)["id"]

        deadline = time.monotonic() + FIRST_SNAPSHOT_S
        while True:  # the first fire is at once
            listed = runner.invoke(app, ["schedule", "list", "gate", "--json", *api])
            row = json.loads(listed.output)[0]
            if row["last_fired_at"] is not None:
                break
            assert time.monotonic() < deadline, row
            time.sleep(POLL_S)  # poll interval of a deadline loop
        table = runner.invoke(app, ["schedule", "list", "gate", *api])
        assert schedule_id in table.output and "3600 s" in table.output

        for verb, enabled in (("disable", False), ("enable", True)):
            result = runner.invoke(app, ["schedule", verb, schedule_id, *api])
            assert result.exit_code == 0, result.output
            rows = json.loads(
                runner.invoke(app, ["schedule", "list", "gate", "--json", *api]).output
            )
            assert rows[0]["enabled"] is enabled

        assert runner.invoke(app, ["schedule", "rm", "snsch_nope", *api]).exit_code == 2
        removed = runner.invoke(app, ["schedule", "rm", schedule_id, *api])
        assert removed.exit_code == 0, removed.output
        assert (
            json.loads(runner.invoke(app, ["schedule", "list", "gate", "--json", *api]).output)
            == []
        )

        down = runner.invoke(app, ["snapshot", "nope", "--out", str(picture), *api])
        assert down.exit_code == 1 and "camera 'nope' does not exist" in down.output

"""The ``heldar`` CLI and ``serve`` as a real process (uvicorn, SQLite, ffmpeg)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from heldar.cli import app
from tests.support.kernel_server import KernelServer

runner = CliRunner()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelServer]:
    with KernelServer(tmp_path_factory.mktemp("kernel") / "data", demo=True) as srv:
        yield srv


def test_serve_with_demo_is_healthy_and_lists_the_demo_camera(server: KernelServer) -> None:
    health = httpx.get(f"{server.base_url}/api/v1/health").json()
    assert health["status"] == "ok"
    assert health["checks"]["database"]["ok"] is True
    assert health["checks"]["ffmpeg"]["version"].startswith("ffmpeg version")
    cameras = httpx.get(f"{server.base_url}/api/v1/cameras").json()
    demo = next(c for c in cameras if c["id"] == "demo")
    clip = server.data_dir / "media" / "demo.mp4"
    assert demo["main_stream_url"] == clip.resolve().as_uri()
    assert clip.stat().st_size > 10_000
    system = httpx.get(f"{server.base_url}/api/v1/system").json()
    assert system["cameras"]["total"] >= 1
    assert system["uptime_s"] > 0
    openapi = httpx.get(f"{server.base_url}/openapi.json").json()
    assert "/api/v1/cameras/{camera_id}" in openapi["paths"]


def test_camera_commands_round_trip(server: KernelServer) -> None:
    api = ["--api", server.base_url]
    added = runner.invoke(
        app,
        ["camera", "add", "Back Yard", "--vendor", "dahua", "--address", "2001:db8::7",
         "--username", "admin", "--password-stdin", "--channel", "2", *api],
        input="t0p:secret\n",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "back_yard" in added.output
    assert "rtsp://***@[2001:db8::7]:554/cam/realmonitor?channel=2&subtype=0" in added.output
    assert "t0p" not in added.output

    listed = runner.invoke(app, ["camera", "list", "--json", *api])
    assert listed.exit_code == 0
    assert "back_yard" in listed.output and "secret" not in listed.output

    shown = runner.invoke(app, ["camera", "show", "back_yard", *api])
    assert shown.exit_code == 0
    assert '"has_password": true' in shown.output

    removed = runner.invoke(app, ["camera", "rm", "back_yard", *api])
    assert removed.exit_code == 0
    again = runner.invoke(app, ["camera", "show", "back_yard", *api])
    assert again.exit_code == 1
    assert "does not exist" in again.output


def test_camera_add_errors_name_the_field(server: KernelServer) -> None:
    result = runner.invoke(
        app, ["camera", "add", "X", "--main-url", "ftp://192.0.2.1/x", "--api", server.base_url]
    )
    assert result.exit_code == 1
    assert "main_stream_url" in result.output and "not allowed" in result.output
    bad_id = runner.invoke(app, ["camera", "show", "../etc", "--api", server.base_url])
    assert bad_id.exit_code == 2
    assert "[a-z0-9_]" in bad_id.output


def test_unreachable_kernel_is_a_clear_error() -> None:
    result = runner.invoke(app, ["camera", "list", "--api", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach the kernel" in result.output


def test_malformed_setting_stops_startup_naming_the_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "heldar", "serve"],
        env={
            "HELDAR_DATA_DIR": str(tmp_path),
            "HELDAR_AI_MAX_TOTAL_FPS": "lots",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "HELDAR_AI_MAX_TOTAL_FPS" in result.stderr
    assert not (tmp_path / "heldar.db").exists()


def test_migrate_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "heldar", "migrate"],
        env={"HELDAR_DATA_DIR": str(tmp_path / "d"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "revision 0003" in result.stdout
    assert (tmp_path / "d" / "heldar.db").is_file()


def test_unknown_setting_is_warned_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    srv = KernelServer(tmp_path / "data", env={"HELDAR_PROT": "1"}).start()
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
    assert srv.stop() in (0, -signal.SIGTERM)
    assert "unknown setting HELDAR_PROT" in srv.log
    assert "Application shutdown complete" in srv.log

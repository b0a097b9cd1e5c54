"""SPEC §6 storage survives SIGKILL: no row without a file, no temp file, after a restart.

A real ``heldar serve`` stores snapshots as fast as eight clients can ask (live snapshots with
``store=true`` from a sampler's frames: each is a temp file, fsync, link, row), and is killed
with SIGKILL while they run. The restarted kernel must have repaired its storage before it
answers.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import psutil

from tests.support.kernel_server import KernelServer
from tests.support.rtsp_camera import RtspTestCamera

WRITERS = 8
STORED_BEFORE_KILL = 150
FIRST_FRAME_S = 20.0
DEADLINE_S = 60.0
POLL_S = 0.05


def _hammer(base_url: str, stop: threading.Event, stored: list[str]) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        while not stop.is_set():
            try:
                response = client.get("/api/v1/cameras/cam/snapshot", params={"store": "true"})
            except httpx.HTTPError:
                return  # the kernel is gone
            if response.status_code == 200:
                stored.append(response.headers["x-snapshot-id"])


def _rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT id, path FROM snapshots"))


def test_sigkill_during_snapshot_writes_leaves_consistent_storage(
    rtsp_camera: RtspTestCamera, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    snapshots_dir = data_dir / "snapshots"
    server = KernelServer(data_dir).start()
    orphans: list[psutil.Process] = []
    try:
        api = f"{server.base_url}/api/v1"
        body = {"id": "cam", "name": "Cam", "main_stream_url": rtsp_camera.url}
        assert httpx.post(f"{api}/cameras", json=body).status_code == 201
        task = {"task_type": "motion", "fps": 5, "width": 320}
        assert httpx.post(f"{api}/cameras/cam/ai-tasks", json=task).status_code == 201
        deadline = time.monotonic() + FIRST_FRAME_S
        while httpx.get(f"{api}/cameras/cam/frame").status_code != 200:
            assert time.monotonic() < deadline, "no sampler frame"
            time.sleep(POLL_S)  # poll interval of a deadline loop

        stop = threading.Event()
        stored: list[str] = []
        writers = [
            threading.Thread(target=_hammer, args=(server.base_url, stop, stored))
            for _ in range(WRITERS)
        ]
        for writer in writers:
            writer.start()
        deadline = time.monotonic() + DEADLINE_S
        while len(stored) < STORED_BEFORE_KILL:
            assert time.monotonic() < deadline, f"only {len(stored)} snapshots stored"
            time.sleep(POLL_S)  # poll interval of a deadline loop
        assert server.proc is not None
        orphans = psutil.Process(server.proc.pid).children(recursive=True)
        server.proc.send_signal(signal.SIGKILL)  # mid-write: eight requests are in flight
        server.proc.wait()
        stop.set()
        for writer in writers:
            writer.join()
    finally:
        server.stop()
        for child in orphans:  # the sampler's ffmpeg, in its own process group
            if child.is_running():
                child.kill()

    left_temp = sorted(p.name for p in snapshots_dir.rglob("*.tmp"))
    rows_before = _rows(data_dir / "heldar.db")
    missing_before = [path for _, path in rows_before if not (snapshots_dir / path).is_file()]
    files_before = {str(p.relative_to(snapshots_dir)) for p in snapshots_dir.rglob("*.jpg")}
    print(
        f"at the kill: {len(rows_before)} rows, {len(left_temp)} temp files, "
        f"{len(missing_before)} rows without a file, "
        f"{len(files_before - {path for _, path in rows_before})} files without a row"
    )
    assert len(rows_before) >= len(stored)  # every answered snapshot was committed

    with KernelServer(data_dir) as restarted:
        rows = _rows(data_dir / "heldar.db")
        assert rows, "the restart dropped every snapshot"
        assert set(stored) <= {r[0] for r in rows}
        assert [path for _, path in rows if not (snapshots_dir / path).is_file()] == []
        assert list(snapshots_dir.rglob("*.tmp")) == []
        files = {str(p.relative_to(snapshots_dir)) for p in snapshots_dir.rglob("*.jpg")}
        stray = files - {path for _, path in rows}
        assert len(stray) <= WRITERS  # at most the links whose row was in flight at the kill
        if stray:
            assert "have no snapshot row" in restarted.log
        listed = httpx.get(
            f"{restarted.base_url}/api/v1/cameras/cam/snapshots", params={"limit": 10_000}
        ).json()
        assert len(listed) == len(rows)

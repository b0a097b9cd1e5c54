"""SPEC §6/§7 schedules and stored snapshots over the real app, SQLite and files (no camera).

The scheduler is off here so that stored state changes only through the requests under test;
its behaviour against a live camera is in ``test_scheduler_live``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from heldar.config import Settings, load_settings
from heldar.errors import NotFound
from heldar.kernel import Kernel
from heldar.media.jpeg import jpeg_dimensions
from heldar.services.cameras import CameraCreate
from heldar.services.snapshots import Shot, SnapshotSource, SnapshotStore, file_stem
from tests.support.images import lavfi_jpeg

CAMERA = {"id": "yard", "name": "Yard", "main_stream_url": "rtsp://127.0.0.1:9/yard"}
T0 = datetime(2026, 11, 21, 12, 0, 0, 250000, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({}, data_dir=tmp_path / "data", snapshot_scheduler_enabled=False)


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return lavfi_jpeg("testsrc2=s=160x90")


@pytest.fixture
async def camera(client: httpx.AsyncClient) -> str:
    assert (await client.post("/api/v1/cameras", json=CAMERA)).status_code == 201
    return "yard"


def shot(data: bytes, captured_at: datetime = T0) -> Shot:
    width, height = jpeg_dimensions(data)
    return Shot(data, width, height, captured_at, SnapshotSource.GRAB)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# Schedules ---------------------------------------------------------------------------


async def test_schedule_crud_and_next_due(
    client: httpx.AsyncClient, camera: str, kernel: Kernel
) -> None:
    before = kernel.clock.now()
    created = await client.post(
        f"/api/v1/cameras/{camera}/snapshot-schedules", json={"interval_seconds": 60}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"].startswith("snsch_") and len(body["id"]) == 38
    assert body["interval_seconds"] == 60 and body["enabled"] is True
    assert body["last_fired_at"] is None and body["last_error"] is None
    # first fire: at once (the scheduler is off here, so it stays due)
    due = datetime.fromisoformat(body["next_due_at"])
    assert before <= due <= kernel.clock.now()
    listed = (await client.get(f"/api/v1/cameras/{camera}/snapshot-schedules")).json()
    assert [s["id"] for s in listed] == [body["id"]]

    off = await client.patch(f"/api/v1/snapshot-schedules/{body['id']}", json={"enabled": False})
    assert off.status_code == 200
    assert off.json()["enabled"] is False and off.json()["next_due_at"] is None
    slower = await client.patch(
        f"/api/v1/snapshot-schedules/{body['id']}", json={"interval_seconds": 300, "enabled": True}
    )
    assert slower.json()["interval_seconds"] == 300
    assert datetime.fromisoformat(slower.json()["next_due_at"]) >= due  # re-enabled: due now

    gone = await client.delete(f"/api/v1/snapshot-schedules/{body['id']}")
    assert gone.status_code == 204
    assert (await client.get(f"/api/v1/cameras/{camera}/snapshot-schedules")).json() == []
    again = await client.delete(f"/api/v1/snapshot-schedules/{body['id']}")
    assert again.status_code == 404
    assert "does not exist" in again.json()["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"interval_seconds": 4}, "interval_seconds"),
        ({"interval_seconds": 86_401}, "interval_seconds"),
        ({"interval_seconds": 0}, "interval_seconds"),
        ({"interval_seconds": 7.5}, "interval_seconds"),
        ({"interval_seconds": "60"}, "interval_seconds"),
        ({"interval_seconds": None}, "interval_seconds"),
        ({}, "interval_seconds"),
        ({"interval_seconds": 60, "every": 5}, "every"),
        ({"interval_seconds": 60, "enabled": "maybe"}, "enabled"),
    ],
)
async def test_bad_schedule_is_a_422_naming_the_field_and_stores_nothing(
    client: httpx.AsyncClient, camera: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post(f"/api/v1/cameras/{camera}/snapshot-schedules", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]
    assert response.json()["detail"][0]["loc"][-1] == field
    assert (await client.get(f"/api/v1/cameras/{camera}/snapshot-schedules")).json() == []


async def test_bad_patch_changes_nothing(client: httpx.AsyncClient, camera: str) -> None:
    schedule = (
        await client.post(
            f"/api/v1/cameras/{camera}/snapshot-schedules", json={"interval_seconds": 30}
        )
    ).json()
    for body in ({"interval_seconds": 3}, {"interval_seconds": None}, {"enabled": None}):
        response = await client.patch(f"/api/v1/snapshot-schedules/{schedule['id']}", json=body)
        assert response.status_code == 422, (body, response.text)
    assert (await client.get(f"/api/v1/cameras/{camera}/snapshot-schedules")).json() == [schedule]


async def test_schedule_routes_404(client: httpx.AsyncClient) -> None:
    missing = await client.post(
        "/api/v1/cameras/nope/snapshot-schedules", json={"interval_seconds": 60}
    )
    assert missing.status_code == 404 and "camera 'nope'" in missing.json()["error"]
    bad_id = await client.patch("/api/v1/snapshot-schedules/snsch_x", json={"enabled": False})
    assert bad_id.status_code == 422 and "schedule_id" in bad_id.json()["error"]
    unknown = await client.patch(f"/api/v1/snapshot-schedules/snsch_{'0' * 32}", json={})
    assert unknown.status_code == 404


async def test_deleting_the_camera_deletes_its_schedules(
    client: httpx.AsyncClient, camera: str
) -> None:
    schedule = (
        await client.post(
            f"/api/v1/cameras/{camera}/snapshot-schedules", json={"interval_seconds": 30}
        )
    ).json()
    assert (await client.delete(f"/api/v1/cameras/{camera}")).status_code == 204
    response = await client.patch(
        f"/api/v1/snapshot-schedules/{schedule['id']}", json={"enabled": False}
    )
    assert response.status_code == 404


# Stored snapshots ----------------------------------------------------------------------


async def test_list_filter_serve_and_delete(
    client: httpx.AsyncClient, camera: str, kernel: Kernel, jpeg: bytes
) -> None:
    stored = [
        await kernel.snapshots.store(camera, shot(jpeg), taken_at=T0 + timedelta(minutes=n))
        for n in range(5)
    ]
    listed = (await client.get(f"/api/v1/cameras/{camera}/snapshots")).json()
    assert [s["id"] for s in listed] == [s.id for s in reversed(stored)]  # newest first
    first = listed[-1]
    assert first["path"] == f"{camera}/{file_stem(T0)}.jpg" == f"{camera}/20261121T120000250Z.jpg"
    assert first["url"] == f"/media/snapshots/{first['path']}"
    assert first["source"] == "grab" and first["size_bytes"] == len(jpeg)
    assert (first["width"], first["height"]) == (160, 90)
    assert first["taken_at"] == "2026-11-21T12:00:00.250000Z"

    window = await client.get(
        f"/api/v1/cameras/{camera}/snapshots",
        params={
            "from": (T0 + timedelta(minutes=1)).isoformat(),
            "to": (T0 + timedelta(minutes=3)).isoformat(),
            "limit": 2,
        },
    )
    assert [s["id"] for s in window.json()] == [stored[3].id, stored[2].id]

    served = await client.get(first["url"])
    assert served.status_code == 200 and served.content == jpeg
    assert served.headers["content-type"] == "image/jpeg"

    assert (await client.delete(f"/api/v1/snapshots/{first['id']}")).status_code == 204
    assert not (kernel.snapshots.snapshots_dir / first["path"]).exists()
    assert (await client.get(first["url"])).status_code == 404
    assert (await client.delete(f"/api/v1/snapshots/{first['id']}")).status_code == 404
    assert len((await client.get(f"/api/v1/cameras/{camera}/snapshots")).json()) == 4


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 10_001},
        {"from": "2026-11-21T12:00:00"},  # no zone: ambiguous
        {"from": "yesterday"},
        {"from": "2026-11-21T13:00:00Z", "to": "2026-11-21T12:00:00Z"},
    ],
)
async def test_bad_snapshot_queries_are_422(
    client: httpx.AsyncClient, camera: str, params: dict[str, Any]
) -> None:
    response = await client.get(f"/api/v1/cameras/{camera}/snapshots", params=params)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "path",
    [
        "/media/snapshots/yard/..%2F..%2Fheldar.db",
        "/media/snapshots/yard/%2e%2e",
        "/media/snapshots/..%2Fyard/20261121T120000250Z.jpg",
        "/media/snapshots/yard/20261121T120000250Z.jpg%00.txt",
        "/media/snapshots/yard/.20261121T120000250Z.jpg.ab12cd34.tmp",
        "/media/snapshots/Yard/20261121T120000250Z.jpg",
        "/media/snapshots/yard/heldar.db",
    ],
)
async def test_no_path_reaches_outside_the_snapshot_files(
    client: httpx.AsyncClient, camera: str, kernel: Kernel, jpeg: bytes, path: str
) -> None:
    await kernel.snapshots.store(camera, shot(jpeg), taken_at=T0)
    (kernel.snapshots.snapshots_dir / camera / ".20261121T120000250Z.jpg.ab12cd34.tmp").write_bytes(
        b"partial"
    )
    response = await client.get(path)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/json"
    assert (await client.get("/media/snapshots/yard/20261121T120000250Z.jpg")).status_code == 200


async def test_same_millisecond_gets_a_suffix_never_an_overwrite(
    camera: str, kernel: Kernel, jpeg: bytes
) -> None:
    a = await kernel.snapshots.store(camera, shot(jpeg), taken_at=T0)
    b = await kernel.snapshots.store(camera, shot(jpeg[:-2] + b"\xff\xd9"), taken_at=T0)
    c = await kernel.snapshots.store(camera, shot(jpeg), taken_at=T0 + timedelta(microseconds=9))
    assert [s.path for s in (a, b, c)] == [
        "yard/20261121T120000250Z.jpg",
        "yard/20261121T120000250Z_1.jpg",
        "yard/20261121T120000250Z_2.jpg",
    ]
    assert kernel.snapshots.file_path(a).read_bytes() == jpeg


async def test_a_failed_insert_leaves_no_file(kernel: Kernel, jpeg: bytes) -> None:
    # No camera 'ghost': the foreign key refuses the row after the file was written.
    with pytest.raises(NotFound, match="camera 'ghost' no longer exists"):
        await kernel.snapshots.store("ghost", shot(jpeg), taken_at=T0)
    assert files_under(kernel.snapshots.snapshots_dir) == set()
    assert not (kernel.snapshots.snapshots_dir / "ghost").exists()


async def test_deleting_a_camera_deletes_its_files_and_rows(
    client: httpx.AsyncClient, camera: str, kernel: Kernel, jpeg: bytes
) -> None:
    await client.post("/api/v1/cameras", json={**CAMERA, "id": "gate", "name": "Gate"})
    for n in range(3):
        await kernel.snapshots.store(camera, shot(jpeg), taken_at=T0 + timedelta(seconds=n))
    kept = await kernel.snapshots.store("gate", shot(jpeg), taken_at=T0)
    assert (await client.delete(f"/api/v1/cameras/{camera}")).status_code == 204
    assert files_under(kernel.snapshots.snapshots_dir) == {kept.path}
    assert await kernel.snapshots.usage() == (1, len(jpeg))


async def test_startup_reconciliation(settings: Settings, jpeg: bytes) -> None:
    """Rows without files are dropped, temp files removed, stray files reported and kept."""
    async with Kernel.open(settings) as kernel:
        await kernel.cameras.create(CameraCreate.model_validate(CAMERA))
        kept = await kernel.snapshots.store("yard", shot(jpeg), taken_at=T0)
        lost = await kernel.snapshots.store("yard", shot(jpeg), taken_at=T0 + timedelta(seconds=1))
    root = settings.resolved_snapshots_dir
    (root / lost.path).unlink()
    (root / "yard" / ".20261121T120002000Z.jpg.0badc0de.tmp").write_bytes(b"half a jp")
    stray = root / "yard" / "20261121T120003000Z.jpg"
    stray.write_bytes(jpeg)
    os.sync()

    async with Kernel.open(settings) as kernel:
        assert await kernel.snapshots.usage() == (1, len(jpeg))
        assert [s.id for s in await kernel.snapshots.list("yard", limit=10)] == [kept.id]
        store_report = await SnapshotStore(
            kernel.engine, kernel.clock, kernel.snapshots.snapshots_dir
        ).reconcile()
    assert files_under(root) == {kept.path, "yard/20261121T120003000Z.jpg"}
    assert store_report.rows_dropped == 0 and store_report.temp_files_removed == 0
    assert store_report.stray_files == 1

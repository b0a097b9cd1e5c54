"""SPEC §3/§4/§7 cameras over the real app, real SQLite: CRUD, rules, secrets, bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from heldar.kernel import Kernel

PASSWORD = "s3cr:t@pw/#"
HIK = {
    "name": "Lobby Cam",
    "vendor": "hikvision",
    "address": "192.0.2.7",
    "username": "admin",
    "password": PASSWORD,
}


def _no_secret(response: httpx.Response) -> None:
    body = response.text
    assert "s3cr" not in body and "s3cr%3At" not in body
    assert "password" not in response.json() if isinstance(response.json(), dict) else True


async def _snapshot_state(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/cameras")
    assert response.status_code == 200
    return list(response.json())


async def test_create_get_list_patch_delete(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/cameras", json=HIK)
    assert created.status_code == 201, created.text
    _no_secret(created)
    cam = created.json()
    assert cam["id"] == "lobby_cam"
    assert cam["has_password"] is True
    assert cam["stream_urls"] == {
        "main": "rtsp://***@192.0.2.7:554/Streaming/Channels/101",
        "sub": "rtsp://***@192.0.2.7:554/Streaming/Channels/102",
    }
    assert cam["created_at"].endswith("Z")

    got = await client.get("/api/v1/cameras/lobby_cam")
    assert got.status_code == 200
    assert got.json() == cam

    listed = await client.get("/api/v1/cameras")
    assert [c["id"] for c in listed.json()] == ["lobby_cam"]

    patched = await client.patch(
        "/api/v1/cameras/lobby_cam", json={"priority": 250, "enabled": False, "channel": 2}
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["priority"], body["enabled"], body["channel"]) == (250, False, 2)
    assert body["stream_urls"]["main"].endswith("/Streaming/Channels/201")
    assert body["has_password"] is True
    assert body["updated_at"] >= cam["updated_at"]

    assert (await client.delete("/api/v1/cameras/lobby_cam")).status_code == 204
    missing = await client.get("/api/v1/cameras/lobby_cam")
    assert missing.status_code == 404
    assert missing.json()["error"] == "camera 'lobby_cam' does not exist"
    assert (await client.delete("/api/v1/cameras/lobby_cam")).status_code == 404


async def test_ids_are_derived_with_suffixes(client: httpx.AsyncClient) -> None:
    ids = []
    for _ in range(3):
        response = await client.post(
            "/api/v1/cameras", json={"name": "Front Door!", "main_stream_url": "rtsp://192.0.2.1/x"}
        )
        assert response.status_code == 201
        ids.append(response.json()["id"])
    assert ids == ["front_door", "front_door_2", "front_door_3"]


async def test_duplicate_explicit_id_is_409_and_keeps_the_original(
    client: httpx.AsyncClient,
) -> None:
    first = {"id": "gate", "name": "Gate", "main_stream_url": "rtsp://192.0.2.1/x"}
    assert (await client.post("/api/v1/cameras", json=first)).status_code == 201
    clash = await client.post("/api/v1/cameras", json={**first, "name": "Other"})
    assert clash.status_code == 409
    assert "already exists" in clash.json()["error"]
    assert (await client.get("/api/v1/cameras/gate")).json()["name"] == "Gate"


async def test_explicit_url_gets_credentials_and_masked_patch_keeps_them(
    client: httpx.AsyncClient, kernel: Kernel
) -> None:
    url = "rtsp://viewer:pa%24%24@192.0.2.9:8554/live"
    created = await client.post(
        "/api/v1/cameras", json={"id": "yard", "name": "Yard", "main_stream_url": url}
    )
    assert created.status_code == 201
    shown = created.json()["main_stream_url"]
    assert shown == "rtsp://***@192.0.2.9:8554/live"
    # A client that PATCHes the object back as it got it must not destroy the credentials.
    back = await client.patch("/api/v1/cameras/yard", json={"main_stream_url": shown, "name": "Y2"})
    assert back.status_code == 200
    stored = await kernel.cameras.get("yard")
    assert stored.main_stream_url == url
    assert stored.name == "Y2"
    # Editing the masked URL into something else is refused, not stored with '***'.
    edited = await client.patch(
        "/api/v1/cameras/yard", json={"main_stream_url": "rtsp://***@192.0.2.10:8554/live"}
    )
    assert edited.status_code == 422
    assert "masked credentials" in edited.json()["error"]
    assert (await kernel.cameras.get("yard")).main_stream_url == url


async def test_password_is_write_only_and_can_be_changed_or_cleared(
    client: httpx.AsyncClient, kernel: Kernel
) -> None:
    await client.post("/api/v1/cameras", json=HIK)
    changed = await client.patch("/api/v1/cameras/lobby_cam", json={"password": "n3w-pw"})
    assert "n3w-pw" not in changed.text
    assert (await kernel.cameras.get("lobby_cam")).password == "n3w-pw"
    cleared = await client.patch("/api/v1/cameras/lobby_cam", json={"password": None})
    assert cleared.json()["has_password"] is False
    assert (await kernel.cameras.get("lobby_cam")).password is None


async def test_file_sources_under_media_dir(client: httpx.AsyncClient, kernel: Kernel) -> None:
    clip = (kernel.settings.media_dir / "clip.mp4").resolve()
    ok = await client.post(
        "/api/v1/cameras", json={"name": "Clip", "main_stream_url": clip.as_uri()}
    )
    assert ok.status_code == 201
    outside = await client.post(
        "/api/v1/cameras",
        json={
            "name": "Leak",
            "main_stream_url": (kernel.settings.data_dir / "heldar.db").resolve().as_uri(),
        },
    )
    assert outside.status_code == 422
    assert "media directory" in outside.json()["error"]


async def test_delete_removes_the_camera_media_dirs(
    client: httpx.AsyncClient, kernel: Kernel
) -> None:
    await client.post(
        "/api/v1/cameras",
        json={"id": "porch", "name": "P", "main_stream_url": "rtsp://192.0.2.1/x"},
    )
    frames = kernel.settings.resolved_frames_dir / "porch"
    snaps = kernel.settings.resolved_snapshots_dir / "porch"
    for d in (frames, snaps):
        d.mkdir(parents=True)
        (d / "x.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    other = kernel.settings.resolved_snapshots_dir / "porch_2"
    other.mkdir()
    assert (await client.delete("/api/v1/cameras/porch")).status_code == 204
    assert not frames.exists() and not snaps.exists()
    assert other.exists()


BAD_CREATES: list[tuple[Any, int, str]] = [
    ({"name": "x", "id": "a/b", "main_stream_url": "rtsp://192.0.2.1/x"}, 422, "id"),
    ({"name": "x", "id": "..", "main_stream_url": "rtsp://192.0.2.1/x"}, 422, "id"),
    ({"name": "x", "id": "Upper", "main_stream_url": "rtsp://192.0.2.1/x"}, 422, "id"),
    ({"name": "x", "main_stream_url": "ftp://192.0.2.1/x"}, 422, "main_stream_url"),
    ({"name": "x", "sub_stream_url": "file:///etc/passwd"}, 422, "sub_stream_url"),
    (
        {"name": "x", "vendor": "hikvision", "address": "192.0.2.1", "rtsp_port": 0},
        422,
        "rtsp_port",
    ),
    (
        {"name": "x", "vendor": "hikvision", "address": "192.0.2.1", "rtsp_port": 65536},
        422,
        "rtsp_port",
    ),
    ({"name": "x", "vendor": "hikvision", "address": "rtsp://192.0.2.1"}, 422, "address"),
    ({"name": "x", "vendor": "hikvision"}, 422, "address"),
    ({"name": "x", "vendor": "axis", "address": "192.0.2.1"}, 422, "vendor"),
    ({"name": "x"}, 422, "main_stream_url"),
    ({"name": "  ", "main_stream_url": "rtsp://192.0.2.1/x"}, 422, "name"),
    ({"name": "x", "main_stream_url": "rtsp://192.0.2.1/x", "colour": "red"}, 422, "colour"),
    ({"name": "x", "main_stream_url": "rtsp://192.0.2.1/x", "priority": -1}, 422, "priority"),
    ({"name": "x", "sub_stream_url": "rtsp://192.0.2.1/x"}, 422, "record_stream"),
    ([1, 2], 422, "body"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_CREATES)
async def test_bad_creates_are_rejected_and_change_nothing(
    client: httpx.AsyncClient, body: Any, status: int, field: str
) -> None:
    await client.post("/api/v1/cameras", json={"id": "keep", "name": "Keep", **HIK})
    before = await _snapshot_state(client)
    response = await client.post("/api/v1/cameras", json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error", "detail"}
    assert field in payload["error"]
    assert any(field in [str(p) for p in d["loc"]] or field == "body" for d in payload["detail"])
    assert await _snapshot_state(client) == before


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/cameras", content=b'{"name": "x",', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "malformed JSON body"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "new_id"}, "id"),
        ({"rtsp_port": 99999}, "rtsp_port"),
        ({"enabled": None}, "enabled"),
        ({"address": None}, "address"),  # the hikvision camera would have no URL left
        ({"main_stream_url": "gopher://192.0.2.1/"}, "main_stream_url"),
    ],
)
async def test_bad_patches_change_nothing(client: httpx.AsyncClient, body: Any, field: str) -> None:
    await client.post("/api/v1/cameras", json=HIK)
    before = await _snapshot_state(client)
    response = await client.patch("/api/v1/cameras/lobby_cam", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]
    assert await _snapshot_state(client) == before


async def test_validation_errors_never_echo_the_password(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/cameras", json={**HIK, "rtsp_port": "not-a-port", "password": PASSWORD}
    )
    assert response.status_code == 422
    assert "s3cr" not in response.text


@pytest.mark.parametrize("path", ["/api/v1/cameras/Bad-Id", "/api/v1/cameras/a..b"])
async def test_bad_path_ids(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 422
    assert "camera_id" in response.json()["error"]


async def test_traversal_paths_never_reach_a_camera(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/cameras/..%2F..%2Fetc", "/api/v1/cameras/%2e%2e"):
        response = await client.get(path)
        assert response.status_code in (404, 422)
        assert "error" in response.json()


async def test_list_limit_and_filter(client: httpx.AsyncClient) -> None:
    for i in range(3):
        await client.post(
            "/api/v1/cameras",
            json={
                "id": f"c{i}",
                "name": f"C{i}",
                "main_stream_url": "rtsp://192.0.2.1/x",
                "enabled": i != 1,
            },
        )
    assert [c["id"] for c in (await client.get("/api/v1/cameras?limit=2")).json()] == ["c0", "c1"]
    assert [c["id"] for c in (await client.get("/api/v1/cameras?enabled=false")).json()] == ["c1"]
    assert (await client.get("/api/v1/cameras?limit=0")).status_code == 422

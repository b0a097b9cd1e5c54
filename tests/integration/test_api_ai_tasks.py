"""SPEC §3/§7 AI tasks over the real app and SQLite: create-or-return, validation, cascade."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from heldar.kernel import Kernel

CAMERA = {"id": "lobby", "name": "Lobby", "main_stream_url": "rtsp://127.0.0.1:9/main"}


@pytest.fixture
async def camera(client: httpx.AsyncClient) -> str:
    assert (await client.post("/api/v1/cameras", json=CAMERA)).status_code == 201
    return "lobby"


async def test_create_returns_201_then_200_with_the_existing_task(
    client: httpx.AsyncClient, camera: str, kernel: Kernel
) -> None:
    first = await client.post(f"/api/v1/cameras/{camera}/ai-tasks", json={"task_type": "motion"})
    assert first.status_code == 201, first.text
    task = first.json()
    assert task["id"].startswith("ai_") and len(task["id"]) == 35
    assert task["stream_profile"] == "sub"
    assert task["fps"] == kernel.settings.default_ai_fps
    assert task["width"] == kernel.settings.default_ai_width
    assert task["config"] == {}
    again = await client.post(
        f"/api/v1/cameras/{camera}/ai-tasks", json={"task_type": "motion", "fps": 9}
    )
    assert again.status_code == 200
    assert again.json() == task  # returned as it is, not modified
    other = await client.post(
        f"/api/v1/cameras/{camera}/ai-tasks",
        json={"task_type": "motion", "stream_profile": "main", "fps": 0.1, "width": 160},
    )
    assert other.status_code == 201
    listed = (await client.get(f"/api/v1/cameras/{camera}/ai-tasks")).json()
    assert [(t["task_type"], t["stream_profile"]) for t in listed] == [
        ("motion", "main"),
        ("motion", "sub"),
    ]


async def test_patch_and_delete(client: httpx.AsyncClient, camera: str) -> None:
    task = (
        await client.post(
            f"/api/v1/cameras/{camera}/ai-tasks",
            json={"task_type": "person", "fps": 2, "config": {"threshold": 0.5}},
        )
    ).json()
    patched = await client.patch(
        f"/api/v1/ai-tasks/{task['id']}", json={"fps": 1.5, "enabled": False, "width": 640}
    )
    assert patched.status_code == 200
    body = patched.json()
    assert (body["fps"], body["enabled"], body["width"]) == (1.5, False, 640)
    assert body["config"] == {"threshold": 0.5}
    assert (await client.delete(f"/api/v1/ai-tasks/{task['id']}")).status_code == 204
    assert (await client.delete(f"/api/v1/ai-tasks/{task['id']}")).status_code == 404
    assert (await client.get(f"/api/v1/cameras/{camera}/ai-tasks")).json() == []


async def test_patch_into_an_existing_profile_is_409(
    client: httpx.AsyncClient, camera: str
) -> None:
    url = f"/api/v1/cameras/{camera}/ai-tasks"
    await client.post(url, json={"task_type": "motion", "stream_profile": "main"})
    sub = (await client.post(url, json={"task_type": "motion"})).json()
    clash = await client.patch(f"/api/v1/ai-tasks/{sub['id']}", json={"stream_profile": "main"})
    assert clash.status_code == 409
    assert (await client.get(url)).json()[1]["stream_profile"] == "sub"


async def test_deleting_the_camera_deletes_its_tasks(
    client: httpx.AsyncClient, camera: str, kernel: Kernel
) -> None:
    await client.post(f"/api/v1/cameras/{camera}/ai-tasks", json={"task_type": "motion"})
    assert len(await kernel.ai_tasks.list_enabled()) == 1
    await client.delete(f"/api/v1/cameras/{camera}")
    assert await kernel.ai_tasks.list_enabled() == []


async def test_list_enabled_skips_disabled_cameras_and_tasks(
    client: httpx.AsyncClient, camera: str, kernel: Kernel
) -> None:
    url = f"/api/v1/cameras/{camera}/ai-tasks"
    await client.post(url, json={"task_type": "motion"})
    await client.post(url, json={"task_type": "person", "enabled": False})
    assert [t.task_type for t in await kernel.ai_tasks.list_enabled()] == ["motion"]
    await client.patch(f"/api/v1/cameras/{camera}", json={"enabled": False})
    assert await kernel.ai_tasks.list_enabled() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task_type": "Motion"}, "task_type"),
        ({"task_type": "a/b"}, "task_type"),
        ({"task_type": "motion", "fps": 0.05}, "fps"),
        ({"task_type": "motion", "fps": 31}, "fps"),
        ({"task_type": "motion", "width": 159}, "width"),
        ({"task_type": "motion", "width": 3841}, "width"),
        ({"task_type": "motion", "stream_profile": "third"}, "stream_profile"),
        ({"task_type": "motion", "config": [1, 2]}, "config"),
        ({"task_type": "motion", "config": {"blob": "x" * 70_000}}, "config"),
        ({"task_type": "motion", "colour": "red"}, "colour"),
        ({"fps": 2}, "task_type"),
    ],
)
async def test_bad_tasks_are_422_and_store_nothing(
    client: httpx.AsyncClient, camera: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post(f"/api/v1/cameras/{camera}/ai-tasks", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]
    assert (await client.get(f"/api/v1/cameras/{camera}/ai-tasks")).json() == []


async def test_unknown_camera_and_task(client: httpx.AsyncClient) -> None:
    missing = await client.post("/api/v1/cameras/ghost/ai-tasks", json={"task_type": "motion"})
    assert missing.status_code == 404
    assert "ghost" in missing.json()["error"]
    assert (await client.get("/api/v1/cameras/ghost/ai-tasks")).status_code == 404
    assert (await client.patch(f"/api/v1/ai-tasks/ai_{'0' * 32}", json={})).status_code == 404
    bad_id = await client.patch("/api/v1/ai-tasks/not-an-id", json={})
    assert bad_id.status_code == 422

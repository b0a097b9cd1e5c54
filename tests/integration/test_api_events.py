"""SPEC §7 events: filters, newest first, redacted payloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from heldar.kernel import Kernel
from heldar.services.events import Severity

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


async def test_filters_and_order(client: httpx.AsyncClient, kernel: Kernel) -> None:
    log = kernel.events
    await log.append("sampler_offline", Severity.WARNING, camera_id="a", timestamp=T0)
    await log.append(
        "sampler_online", Severity.INFO, camera_id="a", timestamp=T0 + timedelta(seconds=5)
    )
    await log.append(
        "sampler_offline", Severity.WARNING, camera_id="b", timestamp=T0 + timedelta(seconds=9)
    )
    all_events = (await client.get("/api/v1/events")).json()
    assert [(e["camera_id"], e["event_type"]) for e in all_events] == [
        ("b", "sampler_offline"),
        ("a", "sampler_online"),
        ("a", "sampler_offline"),
    ]
    only_a = (await client.get("/api/v1/events", params={"camera_id": "a"})).json()
    assert {e["camera_id"] for e in only_a} == {"a"}
    warnings = (await client.get("/api/v1/events", params={"severity": "warning"})).json()
    assert len(warnings) == 2
    window = await client.get(
        "/api/v1/events",
        params={"since": "2026-11-21T12:00:01Z", "until": "2026-11-21T12:00:09Z"},
    )
    assert [e["event_type"] for e in window.json()] == ["sampler_online"]
    assert len((await client.get("/api/v1/events", params={"limit": 1})).json()) == 1


async def test_payload_is_redacted(client: httpx.AsyncClient, kernel: Kernel) -> None:
    await kernel.events.append(
        "sampler_offline",
        Severity.WARNING,
        camera_id="a",
        payload={
            "stderr_tail": "rtsp://admin:s3cret@10.0.0.1/x: 401",
            "nested": ["pw=1 rtsp://u:s3cret@h"],
        },
    )
    response = await client.get("/api/v1/events")
    assert "s3cret" not in response.text
    assert "rtsp://***@10.0.0.1/x" in response.text


async def test_bad_filters(client: httpx.AsyncClient) -> None:
    for params in (
        {"severity": "fatal"},
        {"limit": "0"},
        {"since": "yesterday"},
        {"since": "2026-11-21T12:00:00"},  # no zone: ambiguous
        {"since": "2026-11-21T12:00:00Z", "until": "2026-11-21T11:00:00Z"},
        {"camera_id": "../x"},
    ):
        response = await client.get("/api/v1/events", params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]

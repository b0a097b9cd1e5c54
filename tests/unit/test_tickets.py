"""Frame tickets: HMAC-signed, bound to (task, type, camera, frame, capture time), expiring."""

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from heldar.errors import ConfigError, Unauthorized
from heldar.services.tickets import TICKET_TTL_S, TicketSigner, load_or_create_key

NOW = datetime(2026, 11, 21, 12, 0, 0, 250000, tzinfo=UTC)
KEY = bytes(range(32))


def issue(signer: TicketSigner, **overrides: object) -> str:
    fields: dict[str, object] = {
        "task_id": "ai_" + "1" * 32,
        "task_type": "motion",
        "camera_id": "gate",
        "frame_id": "12-ab3f09c1d2e4",
        "captured_at": NOW - timedelta(milliseconds=40),
        "now": NOW,
    }
    fields.update(overrides)
    return signer.issue(**fields)  # type: ignore[arg-type]


def test_round_trip() -> None:
    signer = TicketSigner(KEY)
    ticket = signer.verify(issue(signer), NOW + timedelta(seconds=5))
    assert (ticket.task_id, ticket.task_type, ticket.camera_id, ticket.frame_id) == (
        "ai_" + "1" * 32,
        "motion",
        "gate",
        "12-ab3f09c1d2e4",
    )
    assert ticket.captured_at == NOW - timedelta(milliseconds=40)
    assert ticket.expires_at == NOW + timedelta(seconds=TICKET_TTL_S)


def test_expired() -> None:
    signer = TicketSigner(KEY)
    token = issue(signer)
    with pytest.raises(Unauthorized, match="expired"):
        signer.verify(token, NOW + timedelta(seconds=TICKET_TTL_S))


def test_another_kernels_ticket_is_forged() -> None:
    token = issue(TicketSigner(bytes(32)))
    with pytest.raises(Unauthorized, match="not issued here"):
        TicketSigner(KEY).verify(token, NOW)


def test_a_changed_payload_breaks_the_signature() -> None:
    signer = TicketSigner(KEY)
    payload, signature = issue(signer).split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["cam"] = "vault"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized, match="not issued here"):
        signer.verify(f"{forged}.{signature}", NOW)


@pytest.mark.parametrize("token", ["", "abc", "abc.", ".abc", "a.b.c", "é.ü", "abc.!!!"])
def test_malformed(token: str) -> None:
    with pytest.raises(Unauthorized, match="frame_ticket"):
        TicketSigner(KEY).verify(token, NOW)


def test_key_file_is_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "ticket.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key  # restarts keep tickets valid
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="ticket key"):
        load_or_create_key(path)

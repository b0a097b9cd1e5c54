"""Frame tickets: proof that a worker's detections come from a frame the kernel handed out.

When a frame is fetched for a task that a worker holds a live lease on, the response carries
``x-frame-ticket``: ``<payload>.<signature>``, both base64url without padding, where payload is
compact JSON ``{"v", "task", "type", "cam", "frame", "cap", "exp"}`` (task id, task type,
camera id, frame id, capture time and expiry in Unix milliseconds) and signature is
HMAC-SHA256 of the payload text under the kernel's ticket key.

Invariants: only :meth:`TicketSigner.verify` turns a token into a :class:`FrameTicket`, and it
refuses (``Unauthorized``) anything not signed with this kernel's key, malformed, of another
version, or past its expiry. The key is 32 random bytes in ``<data>/ticket.key`` (mode 0600),
made on first start, so tickets outlive a kernel restart and never leave the data directory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from heldar.errors import ConfigError, Unauthorized

TICKET_VERSION = 1
KEY_BYTES = 32
# A worker analyses a frame within seconds; two minutes covers a slow model and a retry after
# a kernel hiccup, and keeps a leaked ticket short-lived.
TICKET_TTL_S = 120.0
_MS_PER_S = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class FrameTicket:
    task_id: str
    task_type: str
    camera_id: str
    frame_id: str
    captured_at: datetime
    expires_at: datetime


def load_or_create_key(path: Path) -> bytes:
    """The ticket key at ``path``; created (0600, never replaced) when missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise ConfigError(
                f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte ticket key; delete it "
                "to make a new one (tickets handed out before become invalid)"
            ) from None
        return key
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


class TicketSigner:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a ticket key is {KEY_BYTES} bytes, got {len(key)}")
        self._key = key

    def issue(
        self,
        *,
        task_id: str,
        task_type: str,
        camera_id: str,
        frame_id: str,
        captured_at: datetime,
        now: datetime,
        ttl_s: float = TICKET_TTL_S,
    ) -> str:
        payload = {
            "v": TICKET_VERSION,
            "task": task_id,
            "type": task_type,
            "cam": camera_id,
            "frame": frame_id,
            "cap": _to_ms(captured_at),
            "exp": _to_ms(now + timedelta(seconds=ttl_s)),
        }
        text = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{text}.{_b64(self._sign(text))}"

    def verify(self, token: str, now: datetime) -> FrameTicket:
        """The ticket in ``token``; Unauthorized when forged, malformed or expired."""
        text, dot, signature = token.partition(".")
        if not dot or not text or not signature:
            raise Unauthorized("frame_ticket: malformed (expected <payload>.<signature>)")
        try:
            given = _unb64(signature)
        except (binascii.Error, ValueError):
            raise Unauthorized("frame_ticket: malformed signature") from None
        if not hmac.compare_digest(given, self._sign(text)):
            raise Unauthorized("frame_ticket: signature does not match (not issued here)")
        try:
            payload: dict[str, Any] = json.loads(_unb64(text))
            if payload.get("v") != TICKET_VERSION:
                raise Unauthorized(f"frame_ticket: unsupported version {payload.get('v')!r}")
            ticket = FrameTicket(
                task_id=str(payload["task"]),
                task_type=str(payload["type"]),
                camera_id=str(payload["cam"]),
                frame_id=str(payload["frame"]),
                captured_at=_from_ms(int(payload["cap"])),
                expires_at=_from_ms(int(payload["exp"])),
            )
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise Unauthorized("frame_ticket: malformed payload") from None
        if now >= ticket.expires_at:
            raise Unauthorized(
                f"frame_ticket: expired at {ticket.expires_at.isoformat()}; fetch a newer frame"
            )
        return ticket

    def _sign(self, text: str) -> bytes:
        return hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _to_ms(value: datetime) -> int:
    return round((value - _EPOCH).total_seconds() * _MS_PER_S)


def _from_ms(value: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=value)

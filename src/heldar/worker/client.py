"""The worker's side of the kernel's worker protocol: leases, frames, detections over HTTP.

:class:`KernelClient` makes one call per method and turns every outcome into a type:

::

    WorkerHttpError               base; ``str()`` names the call and the status, never a body
    ├── KernelUnavailable         connection error, timeout, 5xx or 429: back off and retry
    └── ContractViolation         any other 4xx, or a 2xx the contract does not allow: a bug on
                                  one side; ``kind`` groups repeats so each kind is logged once

A frame request answers :class:`Frame` (200), :class:`NotModified` (304: the long poll ended
without a newer frame; ask again at once) or :class:`NoFrame` (404: no frame yet; back off).
The pure helpers (:func:`frame_id_from_etag`, :func:`event_body`) are what the runner posts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from heldar.worker.analysers import Detection

API_PREFIX = "/api/v1"
LEASES_PATH = f"{API_PREFIX}/ai/leases"
EVENTS_PATH = f"{API_PREFIX}/ai/events"
# Kernel limit per POST /ai/events.
MAX_DETECTIONS_PER_POST = 1000
# Error text kept from a response: enough for the kernel's message, never a whole page.
_ERROR_TEXT_MAX_CHARS = 300
_TRANSIENT_STATUS = frozenset({429})  # "too many requests" is back-pressure, not a bug


# Errors -------------------------------------------------------------------------------


class WorkerHttpError(Exception):
    """Base of the client's errors; the message names the call, never a request body."""


class KernelUnavailable(WorkerHttpError):
    """Transient: the kernel is unreachable or overloaded (connection error, 5xx, 429)."""


class ContractViolation(WorkerHttpError):
    """A 4xx or a malformed answer; ``kind`` (call + status + error) is stable across repeats."""

    def __init__(self, call: str, status: int | None, error: str) -> None:
        self.call = call
        self.status = status
        self.error = error
        self.kind = f"{call}:{status}:{error}"
        status_text = f"HTTP {status}" if status is not None else "malformed answer"
        super().__init__(f"{call}: {status_text}: {error}")


# Wire types ---------------------------------------------------------------------------


class TaskSpec(BaseModel):
    """One leased AI task as the kernel describes it (unknown fields are ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    camera_id: str
    task_type: str
    stream_profile: str
    fps: float
    width: int
    config: dict[str, Any] = Field(default_factory=dict)
    frame_url: str


class Lease(BaseModel):
    """``POST /ai/leases`` answer; ``tasks`` is the complete set the worker holds now."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    lease_id: str
    worker_id: str
    expires_at: str
    tasks: list[TaskSpec]


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    worker_id: str
    task_types: tuple[str, ...]
    max_tasks: int | None
    ttl_s: int

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "worker_id": self.worker_id,
            "task_types": list(self.task_types),
            "ttl_secs": self.ttl_s,
        }
        if self.max_tasks is not None:
            body["max_tasks"] = self.max_tasks
        return body


@dataclass(frozen=True, slots=True)
class Frame:
    jpeg: bytes
    etag: str  # as sent, quotes included: what If-None-Match sends back
    captured_at: str | None  # x-frame-captured-at (RFC 3339), passed through
    ticket: str | None  # x-frame-ticket, present while the task is leased


@dataclass(frozen=True, slots=True)
class NotModified:
    """304: no newer frame within ``wait``."""


@dataclass(frozen=True, slots=True)
class NoFrame:
    """404: the sampler has no frame yet (or the camera is gone); ``reason`` from the kernel."""

    reason: str


FrameResult = Frame | NotModified | NoFrame


@dataclass(frozen=True, slots=True)
class PostResult:
    detections_ingested: int
    duplicate: bool
    ticketed: bool


# Pure helpers -------------------------------------------------------------------------


def frame_id_from_etag(etag: str) -> str:
    """``"12-ab3f"`` (or ``W/"12-ab3f"``) -> ``12-ab3f``: the entity tag without its quotes."""
    tag = etag.strip().removeprefix("W/")
    if len(tag) >= 2 and tag[0] == '"' and tag[-1] == '"':
        return tag[1:-1]
    return tag


def event_body(task: TaskSpec, frame: Frame, detections: Sequence[Detection]) -> dict[str, Any]:
    """The ``POST /ai/events`` body for one analysed frame.

    At most :data:`MAX_DETECTIONS_PER_POST` detections, the most confident first when there
    are more (one post per frame: a second post of the same ``frame_id`` would be a
    duplicate). ``timestamp`` and ``frame_ticket`` are left out when the frame had none.
    """
    kept = list(detections)
    if len(kept) > MAX_DETECTIONS_PER_POST:
        kept = sorted(kept, key=lambda d: d.confidence, reverse=True)[:MAX_DETECTIONS_PER_POST]
    body: dict[str, Any] = {
        "camera_id": task.camera_id,
        "task_type": task.task_type,
        "frame_id": frame_id_from_etag(frame.etag),
        "detections": [_detection_json(d) for d in kept],
    }
    if frame.captured_at:
        body["timestamp"] = frame.captured_at
    if frame.ticket:
        body["frame_ticket"] = frame.ticket
    return body


def _detection_json(detection: Detection) -> dict[str, Any]:
    item: dict[str, Any] = {
        "label": detection.label,
        "confidence": detection.confidence,
        "bbox": list(detection.bbox),
    }
    if detection.track_id is not None:
        item["track_id"] = detection.track_id
    if detection.attributes:
        item["attributes"] = dict(detection.attributes)
    return item


# The client ---------------------------------------------------------------------------


class KernelClient:
    """One method per protocol call over a shared :class:`httpx.AsyncClient`.

    The ``httpx`` client's ``base_url`` is the kernel root (``http://host:port``, or a prefix
    behind a proxy); paths from the kernel (``frame_url``) are joined to it. Every call is
    bounded by ``request_timeout_s``; a frame long poll by ``wait_s + request_timeout_s``.
    """

    def __init__(self, http: httpx.AsyncClient, *, request_timeout_s: float) -> None:
        self._http = http
        self._request_timeout_s = request_timeout_s

    async def acquire_lease(self, request: LeaseRequest) -> Lease:
        """Acquire or renew this worker's lease (also the heartbeat)."""
        response = await self._send("lease", "POST", LEASES_PATH, json=request.body())
        _expect(response, "lease", 200)
        try:
            return Lease.model_validate_json(response.content)
        except ValidationError as exc:
            raise ContractViolation("lease", None, _validation_summary(exc)) from None

    async def release_lease(self, lease_id: str) -> bool:
        """``DELETE`` the lease: True when released, False when the kernel no longer knew it."""
        response = await self._send("release", "DELETE", f"{LEASES_PATH}/{lease_id}")
        if response.status_code == httpx.codes.NOT_FOUND:
            return False
        _expect(response, "release", 204)
        return True

    async def fetch_frame(self, frame_url: str, *, etag: str | None, wait_s: float) -> FrameResult:
        """The next frame after ``etag`` (long-polls up to ``wait_s``), or the latest at once."""
        headers = {"If-None-Match": etag} if etag is not None else {}
        # The server holds a long poll for up to wait_s; the read timeout starts after that.
        timeout = httpx.Timeout(self._request_timeout_s, read=wait_s + self._request_timeout_s)
        # Merged into frame_url's own query (profile, task): httpx's params= would replace it.
        url = httpx.URL(frame_url).copy_merge_params({"wait": f"{wait_s:g}"})
        response = await self._send("frame", "GET", url, headers=headers, timeout=timeout)
        status = response.status_code
        if status == httpx.codes.NOT_MODIFIED:
            return NotModified()
        if status == httpx.codes.NOT_FOUND:
            return NoFrame(_error_text(response))
        _expect(response, "frame", 200)
        etag_out = response.headers.get("etag")
        if not etag_out:
            raise ContractViolation("frame", status, "200 without an ETag header")
        return Frame(
            jpeg=response.content,
            etag=etag_out,
            captured_at=response.headers.get("x-frame-captured-at"),
            ticket=response.headers.get("x-frame-ticket"),
        )

    async def post_detections(self, body: dict[str, Any]) -> PostResult:
        response = await self._send("events", "POST", EVENTS_PATH, json=body)
        _expect(response, "events", 200)
        try:
            answer = response.json()
            return PostResult(
                detections_ingested=int(answer.get("detections_ingested", 0)),
                duplicate=bool(answer.get("duplicate", False)),
                ticketed=bool(answer.get("ticketed", False)),
            )
        except (ValueError, TypeError, AttributeError):
            raise ContractViolation("events", 200, "answer is not the documented JSON") from None

    async def _send(
        self, call: str, method: str, url: str | httpx.URL, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:  # connect, read, write, pool, protocol errors
            raise KernelUnavailable(f"{call}: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status >= httpx.codes.INTERNAL_SERVER_ERROR or status in _TRANSIENT_STATUS:
            raise KernelUnavailable(f"{call}: HTTP {status}: {_error_text(response)}")
        return response


def _expect(response: httpx.Response, call: str, status: int) -> None:
    if response.status_code != status:
        raise ContractViolation(call, response.status_code, _error_text(response))


def _error_text(response: httpx.Response) -> str:
    """The kernel's ``error`` message, else the start of the body text."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, str):
        error = response.text.strip() or response.reason_phrase
    return error[:_ERROR_TEXT_MAX_CHARS]


def _validation_summary(exc: ValidationError) -> str:
    """Where the answer broke the contract, without echoing values."""
    parts = [".".join(str(p) for p in error["loc"]) + f": {error['msg']}" for error in exc.errors()]
    return "answer does not match the contract (" + "; ".join(parts[:3]) + ")"

"""Worker posts (``POST /api/v1/ai/events``): provenance rules, then the detection store.

* A post **with** a ``frame_ticket`` is verified in every mode (forged, malformed or expired:
  401). Camera, task type and frame id then come from the ticket; a body that names others is a
  409 (a ticket of another camera cannot vouch for this one). The timestamp defaults to the
  frame's capture time.
* A post **without** a ticket follows ``HELDAR_INGEST_PROVENANCE``: ``off`` accepts it,
  ``warn`` accepts it and logs once per (camera, task type), ``enforce`` refuses it (401).
* The camera must exist (404). Nothing is stored unless every rule passed.
"""

from __future__ import annotations

import logging

from heldar.clock import Clock
from heldar.config import IngestProvenance
from heldar.errors import Conflict, Unauthorized
from heldar.services.cameras import CameraRegistry
from heldar.services.detections import Accepted, DetectionStore, IngestRequest, IngestResult
from heldar.services.tickets import TicketSigner

log = logging.getLogger(__name__)


class Ingest:
    def __init__(
        self,
        *,
        signer: TicketSigner,
        store: DetectionStore,
        cameras: CameraRegistry,
        clock: Clock,
        provenance: IngestProvenance,
    ) -> None:
        self._signer = signer
        self._store = store
        self._cameras = cameras
        self._clock = clock
        self._provenance = provenance
        self._warned: set[tuple[str, str]] = set()

    async def post(self, request: IngestRequest) -> IngestResult:
        accepted = self._accept(request)
        await self._cameras.get(accepted.camera_id)  # 404 for an unknown camera
        return await self._store.ingest(accepted)

    def _accept(self, request: IngestRequest) -> Accepted:
        now = self._clock.now()
        if request.frame_ticket is None:
            self._ticketless(request)
            return Accepted(
                camera_id=request.camera_id,
                task_type=request.task_type,
                task_id=None,
                frame_id=request.frame_id,
                timestamp=request.timestamp or now,
                ticketed=False,
                detections=request.detections,
                event=request.event,
            )
        ticket = self._signer.verify(request.frame_ticket, now)
        for field, sent, vouched in (
            ("camera_id", request.camera_id, ticket.camera_id),
            ("task_type", request.task_type, ticket.task_type),
            ("frame_id", request.frame_id, ticket.frame_id),
        ):
            if sent is not None and sent != vouched:
                raise Conflict(
                    f"{field} '{sent}' disagrees with the frame ticket, which is for "
                    f"{field} '{vouched}'; post the ticket of the frame you analysed"
                )
        return Accepted(
            camera_id=ticket.camera_id,
            task_type=ticket.task_type,
            task_id=ticket.task_id,
            frame_id=ticket.frame_id,
            timestamp=request.timestamp or ticket.captured_at,
            ticketed=True,
            detections=request.detections,
            event=request.event,
        )

    def _ticketless(self, request: IngestRequest) -> None:
        if self._provenance is IngestProvenance.ENFORCE:
            raise Unauthorized(
                "frame_ticket: required (HELDAR_INGEST_PROVENANCE=enforce); post the "
                "x-frame-ticket header of the frame you analysed"
            )
        key = (request.camera_id, request.task_type)
        if self._provenance is IngestProvenance.WARN and key not in self._warned:
            self._warned.add(key)
            log.warning(
                "camera %s, task type %s: detections posted without a frame ticket "
                "(accepted; HELDAR_INGEST_PROVENANCE=enforce refuses them)",
                *key,
            )

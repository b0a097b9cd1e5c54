"""Retention route: ``GET /api/v1/system/retention`` (policy, usage, last sweep)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from heldar.api.deps import KernelDep
from heldar.services.retention import (
    SECONDS_PER_HOUR,
    RetentionReason,
    RetentionStatus,
    SweepResult,
)

router = APIRouter(tags=["system"])


class DeletedByReason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    age: int = Field(description="Older than the age limit.")
    size_cap: int = Field(description="Evicted while the total was over the size cap.")
    disk_floor: int = Field(description="Evicted while free space was under the floor.")


class SweepOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    started_at: datetime
    finished_at: datetime
    deleted: int
    deleted_by_reason: DeletedByReason
    freed_bytes: int = Field(description="Sum of the deleted snapshots' sizes.")
    disk_low: bool | None = Field(
        description="Free space was still under the floor after the sweep; null after an error."
    )
    error: str | None = Field(description="Why the sweep stopped early; null when it completed.")

    @classmethod
    def of(cls, sweep: SweepResult) -> SweepOut:
        counts = sweep.deleted_by_reason
        return cls(
            started_at=sweep.started_at,
            finished_at=sweep.finished_at,
            deleted=sweep.deleted,
            deleted_by_reason=DeletedByReason(
                age=counts.get(RetentionReason.AGE, 0),
                size_cap=counts.get(RetentionReason.SIZE_CAP, 0),
                disk_floor=counts.get(RetentionReason.DISK_FLOOR, 0),
            ),
            freed_bytes=sweep.freed_bytes,
            disk_low=sweep.disk_low,
            error=sweep.error,
        )


class RetentionOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_age_hours: float | None = Field(description="Age limit; null: kept regardless of age.")
    max_total_bytes: int | None = Field(description="Size cap of all snapshots; null: no cap.")
    min_free_bytes: int = Field(description="Free-space floor of the snapshots filesystem.")
    interval_s: float = Field(description="Time between sweeps.")
    snapshot_count: int
    total_bytes: int = Field(description="Sum of all stored snapshots' sizes.")
    disk_free_bytes: int = Field(description="Free space on the snapshots filesystem.")
    disk_total_bytes: int = Field(description="Size of the snapshots filesystem.")
    last_sweep: SweepOut | None = Field(description="null until the first sweep has run.")

    @classmethod
    def of(cls, status: RetentionStatus) -> RetentionOut:
        policy = status.policy
        return cls(
            max_age_hours=policy.max_age_s / SECONDS_PER_HOUR
            if policy.max_age_s is not None
            else None,
            max_total_bytes=policy.max_total_bytes,
            min_free_bytes=policy.min_free_bytes,
            interval_s=policy.interval_s,
            snapshot_count=status.snapshot_count,
            total_bytes=status.total_bytes,
            disk_free_bytes=status.disk_free_bytes,
            disk_total_bytes=status.disk_total_bytes,
            last_sweep=SweepOut.of(status.last_sweep) if status.last_sweep else None,
        )


@router.get("/system/retention", response_model=RetentionOut)
async def retention_status(kernel: KernelDep) -> RetentionOut:
    """The retention policy in force, current snapshot and disk usage, and the last sweep."""
    return RetentionOut.of(await kernel.retention.status())

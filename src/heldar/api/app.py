"""The FastAPI application: routes under ``/api/v1``, one error mapping, kernel lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from heldar import __version__
from heldar.api import (
    ai_tasks,
    cameras,
    errors,
    events,
    media,
    retention,
    samplers,
    snapshots,
    system,
    timelapse,
    workers,
)
from heldar.clock import Clock
from heldar.config import Settings
from heldar.kernel import Kernel

API_PREFIX = "/api/v1"


def create_app(settings: Settings, clock: Clock | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Kernel.open(settings, clock) as kernel:
            app.state.kernel = kernel
            yield

    app = FastAPI(
        title="Heldar Kernel",
        version=__version__,
        summary="Camera media kernel: AI frame sampling and scheduled snapshots.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(cameras.router, prefix=API_PREFIX)
    app.include_router(ai_tasks.router, prefix=API_PREFIX)
    app.include_router(events.router, prefix=API_PREFIX)
    app.include_router(samplers.router, prefix=API_PREFIX)
    app.include_router(system.router, prefix=API_PREFIX)
    app.include_router(snapshots.router, prefix=API_PREFIX)
    app.include_router(retention.router, prefix=API_PREFIX)
    app.include_router(timelapse.router, prefix=API_PREFIX)
    app.include_router(workers.router, prefix=API_PREFIX)
    app.include_router(media.router)
    return app

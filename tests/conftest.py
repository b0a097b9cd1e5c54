"""Fixtures shared by every tier: hermetic settings and an in-process API client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from heldar.api.app import create_app
from heldar.config import Settings, load_settings
from heldar.kernel import Kernel


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Defaults plus a private data dir; the developer's own HELDAR_* variables don't leak in."""
    return load_settings({}, data_dir=tmp_path / "data")


@pytest.fixture
async def kernel_client(settings: Settings) -> AsyncIterator[tuple[Kernel, httpx.AsyncClient]]:
    """The real app with its lifespan (migrations, ffmpeg probe) and an HTTP client to it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kernel") as client:
            yield app.state.kernel, client


@pytest.fixture
async def client(kernel_client: tuple[Kernel, httpx.AsyncClient]) -> httpx.AsyncClient:
    return kernel_client[1]


@pytest.fixture
def kernel(kernel_client: tuple[Kernel, httpx.AsyncClient]) -> Kernel:
    return kernel_client[0]

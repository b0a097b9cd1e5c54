"""Fixtures shared by every tier: hermetic settings and an in-process API client."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from heldar.api.app import create_app
from heldar.config import Settings, load_settings
from heldar.kernel import Kernel
from heldar.media import ffmpeg
from heldar.media.urls import StreamUrl

LOOPBACK_NAMES = frozenset({"localhost"})


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def only_loopback_sources(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never make the in-process kernel's ffmpeg open a non-loopback address.

    The call is refused before ffmpeg starts, and the test fails at teardown (the kernel's
    tasks contain their errors, so raising alone would not reach the test).
    """
    real = ffmpeg.input_args
    refused: list[str] = []

    def guarded(url: StreamUrl, *args: Any, **kwargs: Any) -> list[str]:
        if url.scheme != "file" and not _is_loopback(urlsplit(url.reveal()).hostname):
            refused.append(url.masked)
            raise AssertionError(f"a test made the kernel open a non-loopback source: {url}")
        return real(url, *args, **kwargs)

    monkeypatch.setattr(ffmpeg, "input_args", guarded)
    yield
    assert not refused, f"non-loopback sources were opened: {refused}"


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

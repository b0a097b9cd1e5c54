"""Integration fixtures: real processes on loopback, started once and always stopped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.rtsp_camera import RtspTestCamera


@pytest.fixture(scope="session")
def rtsp_camera() -> Iterator[RtspTestCamera]:
    """A running 640x360 @ 15 fps H.264 camera (GOP 30) with a keeper reader, for the session.

    Tests may stop() and start() it (it comes back on the same URL) but must leave it running.
    """
    camera = RtspTestCamera(width=640, height=360, fps=15, gop=30, keeper=True)
    try:
        camera.start()
        yield camera
    finally:
        camera.stop()

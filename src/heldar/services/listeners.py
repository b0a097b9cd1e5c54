"""Change notification from registries to the services that act on changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

ChangeListener = Callable[[str], Awaitable[None]]


class ChangeListeners:
    """Listeners called in order, after a change is committed, with the camera id affected.

    They are awaited before the API answers, so a change has taken effect (e.g. samplers
    reconciled) by the time the client sees the response.
    """

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []

    def add(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def notify(self, camera_id: str) -> None:
        for listener in self._listeners:
            await listener(camera_id)

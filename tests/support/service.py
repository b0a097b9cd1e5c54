"""The shape every test service shares: ``start()``, ``stop()``, and ``with`` for both."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Service(ABC):
    @abstractmethod
    def start(self) -> object: ...

    @abstractmethod
    def stop(self) -> object:
        """Idempotent: safe after a failed start and when called twice."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""A tiny progress protocol so the library reports progress without importing rich."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives progress of long work. The CLI implements it with rich; the library's default is silent."""

    def start(self, description: str, total: int | None) -> None: ...
    def advance(self, n: int = 1, **metrics: float) -> None: ...
    def finish(self) -> None: ...
    def log(self, message: str) -> None: ...


class NullProgress:
    """A :class:`Progress` that reports nothing."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1, **metrics: float) -> None:
        pass

    def finish(self) -> None:
        pass

    def log(self, message: str) -> None:
        pass

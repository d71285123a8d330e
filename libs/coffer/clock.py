"""Time as a collaborator: use cases take a ``Clock`` so tests can move time instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The real, timezone-aware UTC clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

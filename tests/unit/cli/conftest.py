"""The CLI prints JSON-protocol timestamps in the local time zone as the AWS CLI does; ``in_zone`` pins it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture
def in_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Call with a TZ value (``"UTC"``, ``"Asia/Kolkata"``) to make it the process's local time zone for the
    test; the previous zone is back afterwards."""

    def set_zone(zone: str) -> None:
        monkeypatch.setenv("TZ", zone)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()

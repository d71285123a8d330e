"""Every service of a deployment answers SERVING, and ``coffer status`` says so; a killed service is named."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest

from coffer.settings import SERVICES
from coffer.testing.wait import eventually_sync

pytestmark = pytest.mark.e2e


def test_all_services_serving_and_status_ok(e2e: Any) -> None:
    assert e2e.deployment.health() == dict.fromkeys(SERVICES, "SERVING")

    result = e2e.cli("status")

    assert result.returncode == 0, result.stdout + result.stderr
    for name in SERVICES:
        assert name in result.stdout + result.stderr


def test_status_names_a_killed_service(e2e_factory: Callable[[], Any]) -> None:
    broken = e2e_factory()  # its own deployment: this test breaks it
    assert broken.cli("status").returncode == 0

    store = broken.deployment.processes["store"].proc
    store.send_signal(signal.SIGKILL)
    store.wait(timeout=10)
    eventually_sync(
        lambda: broken.deployment.health()["store"] != "SERVING",
        timeout=10,
        interval=0.1,
        message="the killed store to stop answering SERVING",
    )

    result = broken.cli("status")

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "store" in output
    assert broken.deployment.health()["kms"] == "SERVING"  # only the killed one is down

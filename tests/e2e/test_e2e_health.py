"""Every service of a deployment answers SERVING, and ``coffer status`` says so; a killed service is named."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

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


def test_every_service_process_serves_its_metrics_where_the_profile_says(e2e: Any) -> None:
    """``make run``'s services are separate processes: each serves its own Prometheus metrics, at the URL
    the profile lists, with its own per-RPC counts (the health checks above are calls too)."""
    profile = json.loads(e2e.deployment.profile_path.read_text())
    assert set(profile["metrics"]) == set(SERVICES)
    for name, url in profile["metrics"].items():
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert "coffer_rpc_requests" in families, name
        services = {s.labels["service"] for s in families["coffer_rpc_requests"].samples}
        assert services <= {name}, (name, services)  # a process reports its own service only
    # the store's pool and the rotation queue are there too
    with urllib.request.urlopen(profile["metrics"]["store"], timeout=10) as response:
        assert 'coffer_db_pool_connections{service="store",state="max"}' in response.read().decode()

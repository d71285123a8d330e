"""Prometheus metrics (issue 11, ``coffer.metrics``): every service serves ``GET /metrics`` on its own port
(``COFFER_METRICS_ADDR``), and what the calls did shows there — per-RPC counts by status and latency
histograms, the pools, the data-key cache, the audit trail's group commits — parsed with prometheus-client's
own text parser."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coffer.client import AsyncCofferClient
from coffer.core import errors
from coffer.testing.stack import provisioned_stack

pytestmark = pytest.mark.integration

GSV = "/coffer.api.secrets.v1.SecretsManagerService/GetSecretValue"
STORE_GSV = "/coffer.api.store.v1.SecretStoreService/GetSecretValue"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(port: int) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def test_each_service_serves_what_its_calls_did(
    tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    services = await provisioned_stack(
        home=tmp_path, pki_dir=pki_dir, database_url=database_url, COFFER_METRICS_ADDR="127.0.0.1:0"
    )
    try:
        kms = await services.start_kms()
        store = await services.start_store()
        gateway = await services.start_gateway()
        bound = {
            "kms": kms.server.metrics_port,
            "store": store.server.metrics_port,
            "gateway": gateway.server.metrics_port,
        }
        ports = {name: port for name, port in bound.items() if port is not None}
        assert len(ports) == 3 and len(set(ports.values())) == 3, bound
        _, _, text = await scrape(ports["gateway"])
        before = samples(text)

        assert services.admin is not None
        client = AsyncCofferClient(
            f"127.0.0.1:{gateway.port}", services.ca_file, services.admin, max_attempts=1
        )
        await client.create_secret(name="metrics/one", secret_string="v")
        store.kms.cache.clear()
        for _ in range(5):
            await client.get_secret_value(secret_id="metrics/one")
        with pytest.raises(errors.NotFound):
            await client.get_secret_value(secret_id="metrics/missing")
        await client.close()

        for name, port in ports.items():
            status, content_type, text = await scrape(port)
            assert status == 200 and content_type.startswith("text/plain"), name
            found = samples(text)
            # one process here: every service's metrics are in it, each labelled with its service
            ok = value(found, "coffer_rpc_requests_total", service="gateway", method=GSV, code="OK")
            assert (
                ok - value(before, "coffer_rpc_requests_total", service="gateway", method=GSV, code="OK") == 5
            )
            assert (
                value(found, "coffer_rpc_requests_total", service="gateway", method=GSV, code="NOT_FOUND")
                >= 1
            )
            assert (
                value(found, "coffer_rpc_requests_total", service="store", method=STORE_GSV, code="OK") >= 5
            )
            assert value(found, "coffer_rpc_duration_seconds_count", service="gateway", method=GSV) >= 6
            assert (
                value(found, "coffer_rpc_duration_seconds_bucket", service="gateway", method=GSV, le="+Inf")
                >= 6
            )
            # the data key: fetched from the KMS once after the cache was cleared, then held
            assert value(found, "coffer_data_key_cache_requests_total", service="store", result="miss") >= 1
            assert value(found, "coffer_data_key_cache_requests_total", service="store", result="hit") >= 4
            assert value(found, "coffer_audit_write_seconds_count", service="store") >= 6
            assert value(found, "coffer_db_pool_connections", service="store", state="max") == 10
            assert value(found, "coffer_db_pool_connections", service="kms", state="open") >= 1
            assert "metrics/one" not in text and "admin" not in text  # no secret names, no callers
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{ports['gateway']}/other") as response,
        ):
            assert response.status == 404  # /metrics only
    finally:
        await services.aclose()

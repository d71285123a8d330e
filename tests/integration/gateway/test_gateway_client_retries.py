"""Client retries against the real gateway → store → kms (PostgreSQL):

- a PutSecretValue whose first response is lost after the store applied it (a fault injected in the client's
  channel: the call goes through, then the caller sees UNAVAILABLE) is retried with the same
  ClientRequestToken and makes exactly ONE new version, whose id the retried call answers (async and sync
  clients);
- a GetSecretValue made while the kms is down (the store caches no data keys here, so the read needs it) is
  retried, and succeeds once the kms is back within the retry window (the retry's wait restarts it);
- without retries (``max_attempts=1``) the same faults reach the caller, and non-retryable errors are raised
  after one attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from coffer.client import AsyncCofferClient, CofferClient
from coffer.client.retry import RetryPolicy
from coffer.core import errors
from coffer.testing.wait import eventually

from .conftest import Gateway, gateway_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PUT = "/coffer.api.secrets.v1.SecretsManagerService/PutSecretValue"


class LoseFirstResponse(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Lets the first call of ``method`` reach the service, waits for its answer, then fails it with
    UNAVAILABLE as a connection lost before the response would; records every request of ``method``."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.requests: list[Any] = []
        self.lost = 0

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        call = await continuation(details, request)
        if method != self.method:
            return call
        self.requests.append(request)
        await call  # the store has applied the write
        if self.lost == 0:
            self.lost += 1
            raise lost_response()
        return call


def lost_response() -> grpc.RpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="Socket closed (injected: response lost)",
    )


class LoseFirstResponseSync(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """``LoseFirstResponse`` for the synchronous client's channel."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.requests: list[Any] = []
        self.lost = 0

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        outcome = continuation(details, request)
        if details.method != self.method:
            return outcome
        self.requests.append(request)
        outcome.result()  # the store has applied the write
        if self.lost == 0:
            self.lost += 1
            raise lost_response()
        return outcome


@pytest.fixture
async def uncached(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[Gateway]:
    """kms → store → gateway with the store's data key cache off: every read of a value asks the kms."""
    async with gateway_stack(tmp_path, pki_dir, database_url, COFFER_DATA_KEY_CACHE_SECONDS="0") as gw:
        yield gw


async def test_a_retried_write_whose_response_was_lost_makes_one_version(stack: Gateway) -> None:
    waits: list[float] = []

    async def wait(delay: float) -> None:
        waits.append(delay)

    async with AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials) as plain:
        created = await plain.create_secret(name="retry/db", secret_string="v1")

    fault = LoseFirstResponse(PUT)
    policy = RetryPolicy(async_sleep=wait)
    async with AsyncCofferClient(
        stack.endpoint, stack.ca_file, stack.credentials, retry=policy, interceptors=[fault]
    ) as client:
        put = await client.put_secret_value(secret_id="retry/db", secret_string="v2")
        assert fault.lost == 1 and len(fault.requests) == 2 and len(waits) == 1
        tokens = {r.client_request_token for r in fault.requests}
        assert len(tokens) == 1 and put.version_id in tokens  # the same token both times: one version
        listed = await client.list_secret_version_ids(secret_id="retry/db")
        assert sorted(v.version_id for v in listed.versions) == sorted([created.version_id, put.version_id])
        assert (await client.get_secret_value(secret_id="retry/db")).secret_string == "v2"

    # Without retries the lost response reaches the caller (the write was applied all the same).
    fault = LoseFirstResponse(PUT)
    async with AsyncCofferClient(
        stack.endpoint, stack.ca_file, stack.credentials, max_attempts=1, interceptors=[fault]
    ) as client:
        with pytest.raises(errors.Unavailable):
            await client.put_secret_value(secret_id="retry/db", secret_string="v3")
        assert len(fault.requests) == 1
        # Not retryable: one attempt, raised as is.
        with pytest.raises(errors.NotFound):
            await client.get_secret_value(secret_id="retry/missing")


async def test_the_sync_client_retries_a_lost_write_once(stack: Gateway) -> None:
    def scenario() -> tuple[LoseFirstResponseSync, str, list[str], list[float]]:
        waits: list[float] = []
        fault = LoseFirstResponseSync(PUT)
        with CofferClient(
            stack.endpoint,
            stack.ca_file,
            stack.credentials,
            retry=RetryPolicy(sleep=waits.append),
            interceptors=[fault],
        ) as client:
            client.create_secret(name="retry/sync", secret_string="v1")
            put = client.put_secret_value(secret_id="retry/sync", secret_string="v2")
            listed = client.list_secret_version_ids(secret_id="retry/sync")
        return fault, put.version_id, [v.version_id for v in listed.versions], waits

    fault, version_id, versions, waits = await asyncio.to_thread(scenario)
    assert fault.lost == 1 and len(waits) == 1
    assert {r.client_request_token for r in fault.requests} == {version_id}
    assert len(versions) == 2 and version_id in versions  # the first secret's version and ONE new one


async def test_a_read_is_retried_until_the_kms_is_back(uncached: Gateway) -> None:
    services = uncached.services
    assert services is not None
    async with AsyncCofferClient(uncached.endpoint, uncached.ca_file, uncached.credentials) as plain:
        await plain.create_secret(name="retry/read", secret_string="still here")
    await services.stop_kms()

    async with AsyncCofferClient(
        uncached.endpoint, uncached.ca_file, uncached.credentials, max_attempts=1
    ) as once:
        with pytest.raises(errors.Unavailable):
            await once.get_secret_value(secret_id="retry/read")

        waits: list[float] = []

        async def kms_back(delay: float) -> None:
            """The retry's wait: the kms comes back (and the store reaches it again) meanwhile."""
            waits.append(delay)
            await services.start_kms()
            await eventually(
                lambda: once.get_secret_value(secret_id="retry/read"),
                timeout=20,
                retry_on=(errors.Unavailable,),
                message="the store reaches the restarted kms",
            )

        async with AsyncCofferClient(
            uncached.endpoint,
            uncached.ca_file,
            uncached.credentials,
            retry=RetryPolicy(async_sleep=kms_back),
        ) as client:
            got = await client.get_secret_value(secret_id="retry/read")
        assert got.secret_string == "still here" and len(waits) == 1

"""Request rates through a real stack (kms → store → gateway, PostgreSQL): one principal calling at ten
times its quota is refused with ThrottlingException (RESOURCE_EXHAUSTED) while another principal of the
same account, calling in the same burst, is never refused; every refused call is in the audit trail.

The outcome does not depend on the machine's speed: GetSecretValue is set to 10/s for the account, so a
principal's share is 5/s with a bucket of 5. Of the noisy principal's 50 concurrent calls at most
5 + 5/s x (the burst's duration) pass; the quiet principal's 5 calls fit its own bucket, and the account's
bucket always keeps at least its share for it (the noisy one can take no more than half of it)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.api.secrets.v1 import secrets_pb2_grpc
from coffer.client.credentials import Credentials, SigningInterceptor
from coffer.rpc.status import error_info_of
from coffer.rpc.tls import GATEWAY_HOST, name_options

from .conftest import Gateway, gateway_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NOISY_CALLS = 50  # ten times the noisy principal's 5/s
QUIET_CALLS = 5  # the quiet principal's whole quota


@pytest.fixture
async def throttled(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[Gateway]:
    async with gateway_stack(
        tmp_path,
        pki_dir,
        database_url,
        COFFER_THROTTLE="on",
        COFFER_THROTTLE_RATES=json.dumps({"GetSecretValue": 10}),
        COFFER_THROTTLE_PRINCIPAL_SHARE="0.5",
    ) as gw:
        yield gw


def _channel(gw: Gateway, creds: Credentials) -> grpc.aio.Channel:
    """A channel without retries: each call is one attempt, refused or not."""
    return grpc.aio.secure_channel(
        gw.endpoint,
        grpc.ssl_channel_credentials(root_certificates=gw.ca_file.read_bytes()),
        options=[*name_options(GATEWAY_HOST), ("grpc.enable_retries", 0)],
        interceptors=[SigningInterceptor(creds)],
    )


async def _get(stub: secrets_pb2_grpc.SecretsManagerServiceStub) -> str:
    """ "ok", or the AWS error code of the refusal (its gRPC status checked)."""
    try:
        await stub.GetSecretValue(sm.GetSecretValueRequest(secret_id="app/db"), timeout=30)
    except grpc.aio.AioRpcError as exc:
        info = error_info_of(exc)
        assert info is not None, exc
        if info.reason == "ThrottlingException":
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert exc.details() == "Rate exceeded."
        return str(info.reason)
    return "ok"


async def test_a_noisy_principal_is_throttled_and_another_is_not(throttled: Gateway) -> None:
    gw = throttled
    assert gw.services is not None
    noisy = await gw.services.credential("user/noisy")
    quiet = await gw.services.credential("user/quiet")
    async with _channel(gw, gw.credentials) as admin:
        await secrets_pb2_grpc.SecretsManagerServiceStub(admin).CreateSecret(
            sm.CreateSecretRequest(
                name="app/db", secret_string="s3cr3t", client_request_token=str(uuid.uuid4())
            ),
            timeout=30,
        )
    async with _channel(gw, noisy) as noisy_ch, _channel(gw, quiet) as quiet_ch:
        noisy_stub = secrets_pb2_grpc.SecretsManagerServiceStub(noisy_ch)
        quiet_stub = secrets_pb2_grpc.SecretsManagerServiceStub(quiet_ch)
        # connect both first, so the burst is calls, not handshakes
        await asyncio.gather(noisy_ch.channel_ready(), quiet_ch.channel_ready())
        outcomes = await asyncio.gather(
            *(_get(noisy_stub) for _ in range(NOISY_CALLS)),
            *(_get(quiet_stub) for _ in range(QUIET_CALLS)),
        )
    noisy_out, quiet_out = outcomes[:NOISY_CALLS], outcomes[NOISY_CALLS:]
    assert quiet_out == ["ok"] * QUIET_CALLS
    assert set(noisy_out) <= {"ok", "ThrottlingException"}
    refused = noisy_out.count("ThrottlingException")
    # 5 from the bucket, plus 5/s of refill while the burst lasts (slack for up to 5 s on a slow machine)
    assert refused >= NOISY_CALLS - 5 - 25, noisy_out
    assert noisy_out.count("ok") >= 1

    # every refused call is in the trail, as the noisy principal's, with the AWS error code
    conn = await asyncpg.connect(gw.services.env["COFFER_DATABASE_URL"])
    try:
        rows = await conn.fetch(
            "SELECT principal_arn, error_code FROM store.audit_events WHERE event_name = 'GetSecretValue'"
        )
    finally:
        await conn.close()
    throttled_rows = [r for r in rows if r["error_code"] == "ThrottlingException"]
    assert len(throttled_rows) == refused
    assert {r["principal_arn"] for r in throttled_rows} == {"arn:aws:iam::000000000000:user/noisy"}
    # and the calls that passed were served and recorded by the store
    assert sum(1 for r in rows if r["error_code"] is None) == NOISY_CALLS - refused + QUIET_CALLS


async def test_other_operations_keep_their_own_rate(throttled: Gateway) -> None:
    """A principal throttled on GetSecretValue still creates and lists secrets (other groups)."""
    gw = throttled
    assert gw.services is not None
    noisy = await gw.services.credential("user/noisy")
    async with _channel(gw, noisy) as ch:
        stub = secrets_pb2_grpc.SecretsManagerServiceStub(ch)
        await stub.CreateSecret(
            sm.CreateSecretRequest(name="app/db", secret_string="x", client_request_token=str(uuid.uuid4())),
            timeout=30,
        )
        outcomes = await asyncio.gather(*(_get(stub) for _ in range(NOISY_CALLS)))
        assert "ThrottlingException" in outcomes
        await stub.CreateSecret(
            sm.CreateSecretRequest(
                name="app/other", secret_string="y", client_request_token=str(uuid.uuid4())
            ),
            timeout=30,
        )
        listed = await stub.ListSecrets(sm.ListSecretsRequest(), timeout=30)
        assert {s.name for s in listed.secret_list} == {"app/db", "app/other"}

"""The public door: TLS 1.3 on the gateway port (and no non-ECDHE TLS 1.2), request signatures checked on
every call (missing / wrong → UNAUTHENTICATED with the AWS message), the right one works, and the health
service answers without a credential."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import ssl
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.api.secrets.v1 import secrets_pb2_grpc
from coffer.cli.main import main
from coffer.client import AsyncCofferClient, CofferClient, EndpointUnreachable
from coffer.client.credentials import Credentials, signed_metadata
from coffer.core import errors
from coffer.rpc.tls import GATEWAY_HOST, name_options

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _handshake(port: int, ctx: ssl.SSLContext) -> tuple[str | None, str | None]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=GATEWAY_HOST) as tls,
    ):
        cipher = tls.cipher()
        return tls.version(), cipher[0] if cipher else None


async def test_public_port_negotiates_tls13(lone_gateway: Any) -> None:
    ctx = ssl.create_default_context(cafile=str(lone_gateway.ca_file))
    ctx.set_alpn_protocols(["h2"])
    version, _ = await asyncio.to_thread(_handshake, lone_gateway.runtime.port, ctx)
    assert version == "TLSv1.3"


async def test_tls12_without_ecdhe_is_refused(lone_gateway: Any) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(lone_gateway.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("AES256-GCM-SHA384")
    ctx.set_alpn_protocols(["h2"])
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await asyncio.to_thread(_handshake, lone_gateway.runtime.port, ctx)
    # Control: TLS 1.2 itself works when the client offers an ECDHE suite, so the refusal above is about
    # the key exchange, not about TLS 1.2 or the test setup.
    ok = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ok.load_verify_locations(cafile=str(lone_gateway.ca_file))
    ok.maximum_version = ssl.TLSVersion.TLSv1_2
    ok.set_ciphers("ECDHE+AESGCM")
    ok.set_alpn_protocols(["h2"])
    version, cipher = await asyncio.to_thread(_handshake, lone_gateway.runtime.port, ok)
    assert version == "TLSv1.2" and cipher is not None and cipher.startswith("ECDHE")


def _raw_channel(gw: Any) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(root_certificates=gw.ca_file.read_bytes())
    return grpc.aio.secure_channel(gw.endpoint, creds, options=name_options(GATEWAY_HOST))


async def test_missing_and_wrong_credentials_are_unauthenticated(lone_gateway: Any) -> None:
    method = "/coffer.api.secrets.v1.SecretsManagerService/GetRandomPassword"
    async with _raw_channel(lone_gateway) as channel:
        stub = secrets_pb2_grpc.SecretsManagerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetRandomPassword(sm.GetRandomPasswordRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (info.value.details() or "").startswith("Missing authentication")

        request = sm.GetRandomPasswordRequest()
        right = lone_gateway.credentials
        wrong_secret = Credentials(right.access_key_id, right.secret_access_key + "x")
        unknown = Credentials("AKIA" + "Q" * 16, right.secret_access_key)
        for creds, message in (
            (wrong_secret, "The request signature we calculated does not match"),
            (unknown, "The security token included in the request is invalid."),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetRandomPassword(
                    request, metadata=tuple(signed_metadata(creds, method, request)), timeout=10
                )
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert (info.value.details() or "").startswith(message)
        # an old bearer token is refused as no signature at all
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetRandomPassword(request, metadata=(("authorization", "Bearer cfr_x_y"),), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # Forwarded operations are refused before anything is forwarded.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetSecretValue(sm.GetSecretValueRequest(secret_id="x"), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # The health service needs no credential.
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_right_credential_works_and_errors_carry_aws_names(lone_gateway: Any) -> None:
    async with AsyncCofferClient(
        lone_gateway.endpoint, lone_gateway.ca_file, lone_gateway.credentials
    ) as client:
        pw = await client.get_random_password(password_length=40, exclude_punctuation=True)
        assert len(pw.random_password) == 40 and pw.random_password.isalnum()
        with pytest.raises(errors.InvalidParameter) as info:
            await client.get_random_password(password_length=2)
        assert info.value.code == "InvalidParameterException"
        with pytest.raises(errors.Validation):
            await client.get_random_password(password_length=5000)
    async with AsyncCofferClient(lone_gateway.endpoint, lone_gateway.ca_file, None) as anonymous:
        with pytest.raises(errors.Unauthenticated) as missing:
            await anonymous.get_random_password()
        assert missing.value.code == "MissingAuthenticationTokenException"
    bad_creds = Credentials("AKIA" + "B" * 16, "bad")
    async with AsyncCofferClient(lone_gateway.endpoint, lone_gateway.ca_file, bad_creds) as bad:
        with pytest.raises(errors.Unauthenticated) as wrong:
            await bad.get_random_password()
        assert wrong.value.code == "UnrecognizedClientException"


async def test_an_access_key_created_while_running_works_at_once(lone_gateway: Any) -> None:
    creds = await lone_gateway.services.credential("user/late")
    async with AsyncCofferClient(lone_gateway.endpoint, lone_gateway.ca_file, creds) as client:
        assert len((await client.get_random_password(password_length=12)).random_password) == 12


async def test_sync_client_and_cli_reach_the_gateway(
    lone_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sync_call() -> str:
        with CofferClient(lone_gateway.endpoint, lone_gateway.ca_file, lone_gateway.credentials) as client:
            return client.get_random_password(password_length=12).random_password

    assert len(await asyncio.to_thread(sync_call)) == 12

    out, err = io.StringIO(), io.StringIO()
    argv = [
        "secretsmanager", "get-random-password", "--password-length", "24", "--exclude-numbers",
        "--endpoint", lone_gateway.endpoint, "--ca-file", str(lone_gateway.ca_file),
    ]  # fmt: skip
    monkeypatch.setenv("COFFER_ACCESS_KEY_ID", lone_gateway.credentials.access_key_id)
    monkeypatch.setenv("COFFER_SECRET_ACCESS_KEY", lone_gateway.credentials.secret_access_key)
    code = await asyncio.to_thread(main, argv, stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    body = json.loads(out.getvalue())
    assert list(body) == ["RandomPassword"] and len(body["RandomPassword"]) == 24
    assert not any(c.isdigit() for c in body["RandomPassword"])

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setenv("COFFER_ACCESS_KEY_ID", "AKIA" + "W" * 16)
    code = await asyncio.to_thread(main, argv, stdout=out, stderr=err)
    assert code == 254 and out.getvalue() == ""
    assert err.getvalue().strip() == (
        "An error occurred (UnrecognizedClientException) when calling the GetRandomPassword operation: "
        "The security token included in the request is invalid."
    )


async def test_unreachable_endpoint(lone_gateway: Any) -> None:
    async with AsyncCofferClient(
        "127.0.0.1:1", lone_gateway.ca_file, lone_gateway.credentials, timeout=5
    ) as client:
        with pytest.raises(EndpointUnreachable) as info:
            await client.get_random_password()
        assert info.value.code == "ServiceUnavailable"
        assert info.value.message.startswith("Could not connect to the endpoint 127.0.0.1:1")
    out, err = io.StringIO(), io.StringIO()
    argv = ["kms", "list-keys", "--endpoint", "127.0.0.1:1", "--ca-file", str(lone_gateway.ca_file)]
    code = await asyncio.to_thread(main, argv, stdout=out, stderr=err)
    assert code == 255 and out.getvalue() == ""
    assert err.getvalue().startswith("Could not connect to the endpoint 127.0.0.1:1")


async def test_status_of_a_gateway_only_profile(lone_gateway: Any, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(
        main, ["status", "--profile", str(lone_gateway.profile)], stdout=out, stderr=err
    )
    assert code == 0, err.getvalue()
    assert "gateway" in out.getvalue() and "SERVING" in out.getvalue()

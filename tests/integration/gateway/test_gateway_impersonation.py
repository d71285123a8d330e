"""Nobody but the gateway can pose as the gateway. A fake gateway served with another certificate of the same
CA - the operator's (handed to users by the profile) or the store's - is refused by the SDK (async and sync)
and the CLI in the TLS handshake, before any signed request is sent: the fake server records every call's
metadata and sees none. And through the real gateway, the kms records the real caller: its audit line names
the principal the gateway authenticated and the gateway's certificate that carried the call."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from structlog.testing import capture_logs

from coffer.cli.main import main
from coffer.client import AsyncCofferClient, CofferClient, EndpointUnreachable
from coffer.client.credentials import Credentials
from coffer.rpc.tls import TlsFiles, server_credentials

from .conftest import write_profile

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class Recorder(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Answers every method with an empty message after recording the call's metadata."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        self.seen.append({k: str(v) for k, v in handler_call_details.invocation_metadata or ()})

        async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return b""

        return grpc.unary_unary_rpc_method_handler(answer)


@contextlib.asynccontextmanager
async def fake_gateway(pki_dir: Path, identity: str) -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((recorder,))
    port = server.add_secure_port(
        "127.0.0.1:0",
        server_credentials(TlsFiles.for_identity(pki_dir, identity), require_client_cert=False),
    )
    await server.start()
    try:
        yield f"127.0.0.1:{port}", recorder
    finally:
        await server.stop(0)


@pytest.mark.parametrize("identity", ["operator", "store"])
async def test_a_fake_gateway_with_another_certificate_of_the_ca_never_sees_the_token(
    pki_dir: Path, tmp_path: Path, identity: str
) -> None:
    token = Credentials("AKIA" + "S" * 16, "s" * 40)
    async with fake_gateway(pki_dir, identity) as (endpoint, recorder):
        async with AsyncCofferClient(endpoint, pki_dir / "ca.crt", token, timeout=5) as client:
            with pytest.raises(EndpointUnreachable):
                await client.get_secret_value(secret_id="db/prod")

        def sync_call() -> None:
            with CofferClient(endpoint, pki_dir / "ca.crt", token, timeout=5) as client:
                client.get_secret_value(secret_id="db/prod")

        with pytest.raises(EndpointUnreachable):
            await asyncio.to_thread(sync_call)

        profile = write_profile(
            tmp_path / "profile.json", endpoint=endpoint, pki_dir=pki_dir, credentials=token, services={}
        )
        err = io.StringIO()

        def cli() -> int:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                return main(
                    ["--profile", str(profile), "secretsmanager", "get-secret-value", "--secret-id", "x"]
                )

        assert await asyncio.to_thread(cli) != 0
        assert recorder.seen == []  # no call reached the fake server: no token, no request


async def test_the_kms_records_the_principal_the_gateway_authenticated(stack: Any) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials) as client:
            await client.kms.create_key(description="audited")
            await client.create_secret(name="audited/x", secret_string="v")
    internal = [e for e in logs if e.get("event") == "audit" and "peer" in e]
    by_action = {e["action"].rsplit("/", 1)[1]: e for e in internal}
    admin = "arn:aws:iam::000000000000:user/admin"
    assert (by_action["CreateKey"]["peer"], by_action["CreateKey"]["principal"]) == ("gateway", admin)
    assert (by_action["CreateSecret"]["peer"], by_action["CreateSecret"]["principal"]) == ("gateway", admin)
    assert (by_action["GenerateDataKey"]["peer"], by_action["GenerateDataKey"]["principal"]) == (
        "store",
        admin,
    )
    assert stack.credentials.secret_access_key not in repr(logs)


async def test_control_a_server_with_the_gateway_certificate_receives_the_signature(pki_dir: Path) -> None:
    """The recorder above does see calls: served with the gateway's own certificate, it gets the signed call
    (the signature, never the secret access key)."""
    token = Credentials("AKIA" + "T" * 16, "t" * 40)
    async with fake_gateway(pki_dir, "gateway") as (endpoint, recorder):
        client = AsyncCofferClient(endpoint, pki_dir / "ca.crt", token, timeout=5)
        async with client:
            await client.get_secret_value(secret_id="db/prod")
    [seen] = recorder.seen
    assert seen["authorization"].startswith(
        f"COFFER1-HMAC-SHA256 Credential={token.access_key_id}, Timestamp="
    )
    assert token.secret_access_key not in repr(seen)

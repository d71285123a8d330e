"""Internal certificates no longer bypass authentication and audit. With the gateway's certificate, a call
straight to the store that claims a principal (``x-coffer-principal``) without a valid gateway-signed
assertion is refused (AccessDenied) - forged, garbage, signed by another key, or meant for another service -
and leaves an audit line naming the certificate that made it; without a claim, the call runs as
``service/gateway``. A valid assertion names its principal at the store and, forwarded by the store, at the
kms. The rotation service's certificate may not use the store's secrets API at all. Every internal call the
store or the kms serves writes one audit line with the TLS identity and the verified principal."""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping
from typing import Any

import grpc
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from structlog.testing import capture_logs

from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.api.store.v1 import store_pb2_grpc
from coffer.pki import SIGNING_KEY
from coffer.rpc.assertions import PrincipalSigner
from coffer.rpc.status import error_info_of
from coffer.rpc.tls import TlsFiles, channel_credentials, name_options, service_host

from .conftest import StoreStack

STORE_GET = "/coffer.api.store.v1.SecretStoreService/GetSecretValue"
STORE_CREATE = "/coffer.api.store.v1.SecretStoreService/CreateSecret"
KMS_DATA_KEY = "/coffer.api.kms.v1.KeyManagementService/GenerateDataKey"


def _audit(logs: list[MutableMapping[str, Any]], action: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e.get("event") == "audit" and e.get("action") == action]


def _raw_store(
    stack: StoreStack, identity: str
) -> tuple[grpc.aio.Channel, store_pb2_grpc.SecretStoreServiceStub]:
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{stack.store_runtime.port}",
        channel_credentials(TlsFiles.for_identity(stack.settings.pki_dir, identity)),
        options=name_options(service_host("store")),
    )
    return channel, store_pb2_grpc.SecretStoreServiceStub(channel)


def _signer(stack: StoreStack, **options: Any) -> PrincipalSigner:
    """A signer with the gateway's real key (``options``: e.g. another audience)."""
    key = serialization.load_pem_private_key((stack.settings.pki_dir / SIGNING_KEY).read_bytes(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return PrincipalSigner(key, **options)


async def _create(stack: StoreStack, name: str) -> None:
    await stack.store.CreateSecret(
        pb.CreateSecretRequest(name=name, client_request_token=str(uuid.uuid4()), secret_string="v")
    )


@pytest.mark.parametrize("forgery", ["no assertion", "garbage", "another key", "meant for the kms only"])
async def test_a_claimed_principal_without_a_valid_assertion_is_refused_and_audited(
    stack: StoreStack, forgery: str
) -> None:
    await _create(stack, "forge/target")
    metadata: list[tuple[str, str]] = [("x-coffer-principal", "user/admin")]
    if forgery == "garbage":
        metadata.append(("x-coffer-assertion", "v1.eyJzdWIiOiJ1c2VyL2FkbWluIn0.AAAA"))
    elif forgery == "another key":
        stranger = PrincipalSigner(ed25519.Ed25519PrivateKey.generate())
        metadata.append(("x-coffer-assertion", stranger.assertion_for("user/admin")))
    elif forgery == "meant for the kms only":
        metadata.append(("x-coffer-assertion", _signer(stack, audience=("kms",)).assertion_for("user/admin")))
    channel, stub = _raw_store(stack, "gateway")
    async with channel:
        with (
            capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs,
            pytest.raises(grpc.aio.AioRpcError) as info,
        ):
            await stub.GetSecretValue(
                pb.GetSecretValueRequest(secret_id="forge/target"), metadata=metadata, timeout=10
            )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    error_info = error_info_of(info.value)
    assert error_info is not None and error_info.reason == "AccessDeniedException"
    [line] = _audit(logs, STORE_GET)
    assert line["peer"] == "gateway" and line["outcome"] == "denied"
    assert line["principal"] is None and line["error_code"] == "AccessDeniedException"


async def test_without_a_claim_the_gateway_certificate_acts_as_service_gateway(stack: StoreStack) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await _create(stack, "plain/gateway")
    [store_line] = _audit(logs, STORE_CREATE)
    assert (store_line["peer"], store_line["principal"], store_line["outcome"]) == (
        "gateway",
        "service/gateway",
        "allowed",
    )
    assert store_line["request_id"]
    # the store's own call to the kms claims nobody: the kms sees the store itself
    [kms_line] = _audit(logs, KMS_DATA_KEY)
    assert (kms_line["peer"], kms_line["principal"]) == ("store", "service/store")


async def test_a_valid_assertion_names_the_principal_at_the_store_and_the_kms(stack: StoreStack) -> None:
    token = _signer(stack).assertion_for("user/alice")
    channel, stub = _raw_store(stack, "gateway")
    async with channel:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await stub.CreateSecret(
                pb.CreateSecretRequest(
                    name="signed/x", client_request_token=str(uuid.uuid4()), secret_string="v"
                ),
                metadata=[("x-coffer-principal", "user/alice"), ("x-coffer-assertion", token)],
                timeout=10,
            )
            # the principal header must agree with the assertion
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetSecretValue(
                    pb.GetSecretValueRequest(secret_id="signed/x"),
                    metadata=[("x-coffer-principal", "user/admin"), ("x-coffer-assertion", token)],
                    timeout=10,
                )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    [store_line] = _audit(logs, STORE_CREATE)
    assert (store_line["peer"], store_line["principal"]) == ("gateway", "user/alice")
    [kms_line] = _audit(logs, KMS_DATA_KEY)
    assert (kms_line["peer"], kms_line["principal"]) == ("store", "user/alice")
    assert kms_line["request_id"] == store_line["request_id"]


async def test_the_rotation_certificate_may_not_read_secrets_from_the_store(stack: StoreStack) -> None:
    await _create(stack, "rotation/target")
    channel, stub = _raw_store(stack, "rotation")
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetSecretValue(
                pb.GetSecretValueRequest(secret_id="rotation/target"),
                metadata=[("x-coffer-principal", "user/admin")],
                timeout=10,
            )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "Service identity rotation may not call" in (info.value.details() or "")

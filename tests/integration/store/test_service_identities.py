"""mTLS identities: each internal service accepts only the identities that should call it (kms: store and,
for key management, gateway; store: gateway and rotation), and a client without a certificate gets nowhere."""

from __future__ import annotations

import grpc
import pytest

from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.api.secrets.v1 import secrets_pb2
from coffer.api.store.v1 import store_pb2_grpc
from coffer.core import errors
from coffer.rpc.channel import secure_channel
from coffer.rpc.tls import TlsFiles, channel_credentials

from .conftest import StoreStack


def _store_stub(
    stack: StoreStack, identity: str
) -> tuple[grpc.aio.Channel, store_pb2_grpc.SecretStoreServiceStub]:
    channel = secure_channel(
        f"127.0.0.1:{stack.store_runtime.port}",
        TlsFiles.for_identity(stack.settings.pki_dir, identity),
        server_name="store",
    )
    return channel, store_pb2_grpc.SecretStoreServiceStub(channel)


def _kms_stub(
    stack: StoreStack, identity: str
) -> tuple[grpc.aio.Channel, kms_pb2_grpc.KeyManagementServiceStub]:
    channel = secure_channel(
        f"127.0.0.1:{stack.kms_runtime.port}",
        TlsFiles.for_identity(stack.settings.pki_dir, identity),
        server_name="kms",
    )
    return channel, kms_pb2_grpc.KeyManagementServiceStub(channel)


@pytest.mark.parametrize("identity", ["gateway", "rotation"])
async def test_store_accepts_gateway_and_rotation(stack: StoreStack, identity: str) -> None:
    channel, stub = _store_stub(stack, identity)
    try:
        response = await stub.ListSecrets(secrets_pb2.ListSecretsRequest())
        assert list(response.secret_list) == []
    finally:
        await channel.close()


@pytest.mark.parametrize("identity", ["kms", "operator", "store"])
async def test_store_refuses_other_identities(stack: StoreStack, identity: str) -> None:
    channel, stub = _store_stub(stack, identity)
    try:
        with pytest.raises(errors.AccessDenied) as info:
            await stub.ListSecrets(secrets_pb2.ListSecretsRequest())
        assert info.value.code == "AccessDeniedException"
        assert f"Service identity {identity} may not call" in info.value.message
    finally:
        await channel.close()


@pytest.mark.parametrize("identity", ["rotation", "operator", "kms"])
async def test_kms_refuses_identities_other_than_store_and_gateway(stack: StoreStack, identity: str) -> None:
    channel, stub = _kms_stub(stack, identity)
    try:
        with pytest.raises(errors.AccessDenied):
            await stub.ListKeys(kms_pb2.ListKeysRequest())
    finally:
        await channel.close()


async def test_kms_accepts_store(stack: StoreStack) -> None:
    listed = await stack.kms.ListKeys(kms_pb2.ListKeysRequest())
    assert listed.truncated is False


async def test_a_client_without_a_certificate_cannot_reach_the_store(stack: StoreStack) -> None:
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{stack.store_runtime.port}",
        channel_credentials(TlsFiles(ca=stack.settings.pki_dir / "ca.crt")),
        options=[("grpc.ssl_target_name_override", "store")],
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await store_pb2_grpc.SecretStoreServiceStub(channel).ListSecrets(
                secrets_pb2.ListSecretsRequest(), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake is refused
    finally:
        await channel.close()

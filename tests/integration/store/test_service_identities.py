"""mTLS identities: each internal service accepts only the identities that should call it (kms: store and,
for key management, gateway; store: the gateway, and the rotation service on RotationControlService only),
a certificate without client usage (the kms's) cannot call at all, and a client without a certificate gets
nowhere."""

from __future__ import annotations

import grpc
import pytest

from coffer.api.iam.v1 import directory_pb2, directory_pb2_grpc
from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.api.secrets.v1 import secrets_pb2
from coffer.api.store.v1 import store_pb2_grpc
from coffer.core import errors
from coffer.pki import issue
from coffer.rpc.channel import secure_channel
from coffer.rpc.tls import TlsFiles, channel_credentials, name_options, service_host

from .conftest import StoreStack

#: An identity with a server certificate only.
SERVING_ONLY = "serving-only"


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


@pytest.mark.parametrize("identity", ["gateway"])
async def test_store_accepts_the_gateway(stack: StoreStack, identity: str) -> None:
    channel, stub = _store_stub(stack, identity)
    try:
        response = await stub.ListSecrets(secrets_pb2.ListSecretsRequest())
        assert list(response.secret_list) == []
    finally:
        await channel.close()


@pytest.mark.parametrize("identity", ["rotation", "operator", "store"])
async def test_store_refuses_other_identities(stack: StoreStack, identity: str) -> None:
    channel, stub = _store_stub(stack, identity)
    try:
        with pytest.raises(errors.AccessDenied) as info:
            await stub.ListSecrets(secrets_pb2.ListSecretsRequest())
        assert info.value.code == "AccessDeniedException"
        assert f"Service identity {identity} may not call" in info.value.message
    finally:
        await channel.close()


@pytest.mark.parametrize("identity", ["rotation", "operator"])
async def test_kms_refuses_identities_other_than_store_and_gateway(stack: StoreStack, identity: str) -> None:
    channel, stub = _kms_stub(stack, identity)
    try:
        with pytest.raises(errors.AccessDenied):
            await stub.ListKeys(kms_pb2.ListKeysRequest())
    finally:
        await channel.close()


@pytest.mark.parametrize("callee", ["store", "kms"])
async def test_the_kms_certificate_may_call_the_directory_and_audit_append_only(
    stack: StoreStack, callee: str
) -> None:
    """The kms's certificate calls the store's principal directory (to resolve its callers) and the audit
    trail's Append (the events of the calls it serves), and nothing else: the secrets API of the store and
    the kms itself refuse it."""
    channel, stub = _store_stub(stack, "kms") if callee == "store" else _kms_stub(stack, "kms")
    try:
        with pytest.raises(errors.AccessDenied):
            if isinstance(stub, store_pb2_grpc.SecretStoreServiceStub):
                await stub.ListSecrets(secrets_pb2.ListSecretsRequest(), timeout=5)
            else:
                await stub.ListKeys(kms_pb2.ListKeysRequest(), timeout=5)
        if callee == "store":
            directory = directory_pb2_grpc.PrincipalDirectoryServiceStub(channel)
            with pytest.raises(errors.NotFound):
                await directory.ResolveAccessKey(
                    directory_pb2.ResolveAccessKeyRequest(access_key_id="AKIA" + "N" * 16), timeout=5
                )
    finally:
        await channel.close()


@pytest.mark.parametrize("callee", ["store", "kms"])
async def test_a_certificate_without_client_usage_cannot_call_at_all(stack: StoreStack, callee: str) -> None:
    """A certificate that serves only (no client-auth usage: an identity the PKI does not know as a caller):
    the TLS handshake itself refuses it as a client certificate. (The kms's own certificate calls the store
    since the audit trail: the kms sends its events to the store's Append.)"""
    if not (stack.settings.pki_dir / f"{SERVING_ONLY}.crt").exists():
        issue(stack.settings.pki_dir, SERVING_ONLY)
    channel, stub = _store_stub(stack, SERVING_ONLY) if callee == "store" else _kms_stub(stack, SERVING_ONLY)
    try:
        with pytest.raises(errors.Unavailable):
            if isinstance(stub, store_pb2_grpc.SecretStoreServiceStub):
                await stub.ListSecrets(secrets_pb2.ListSecretsRequest(), timeout=5)
            else:
                await stub.ListKeys(kms_pb2.ListKeysRequest(), timeout=5)
    finally:
        await channel.close()


async def test_kms_accepts_store(stack: StoreStack) -> None:
    listed = await stack.kms.ListKeys(kms_pb2.ListKeysRequest())
    assert listed.truncated is False


async def test_a_client_without_a_certificate_cannot_reach_the_store(stack: StoreStack) -> None:
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{stack.store_runtime.port}",
        channel_credentials(TlsFiles(ca=stack.settings.pki_dir / "ca.crt")),
        options=name_options(service_host("store")),
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await store_pb2_grpc.SecretStoreServiceStub(channel).ListSecrets(
                secrets_pb2.ListSecretsRequest(), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake is refused
    finally:
        await channel.close()


@pytest.mark.parametrize("identity", ["rotation", "operator"])
async def test_only_the_gateway_and_the_kms_may_read_the_principal_directory(
    stack: StoreStack, identity: str
) -> None:
    channel, _ = _store_stub(stack, identity)
    directory = directory_pb2_grpc.PrincipalDirectoryServiceStub(channel)
    try:
        with pytest.raises(errors.AccessDenied):
            await directory.ResolveAccessKey(
                directory_pb2.ResolveAccessKeyRequest(access_key_id="AKIA" + "N" * 16), timeout=5
            )
        stream = directory.WatchPrincipalChanges(directory_pb2.WatchPrincipalChangesRequest(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stream:
                pass
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await channel.close()


async def test_only_the_gateway_gets_key_material_from_the_directory(stack: StoreStack) -> None:
    akid = await stack.db.fetchval(
        "SELECT k.access_key_id FROM store.iam_access_keys k"
        " JOIN store.iam_principals p ON p.id = k.principal_id WHERE p.name = 'admin'"
    )
    answers = {}
    for identity in ("gateway", "kms"):
        channel, _ = _store_stub(stack, identity)
        try:
            directory = directory_pb2_grpc.PrincipalDirectoryServiceStub(channel)
            answers[identity] = await directory.ResolveAccessKey(
                directory_pb2.ResolveAccessKeyRequest(access_key_id=akid), timeout=5
            )
        finally:
            await channel.close()
    for answer in answers.values():
        assert answer.principal_arn == "arn:aws:iam::000000000000:user/admin" and answer.status == "Active"
        assert [p.name for p in answer.policies] == ["AdministratorAccess"]
    assert len(answers["gateway"].signing_key) == 32
    assert answers["kms"].signing_key == b""

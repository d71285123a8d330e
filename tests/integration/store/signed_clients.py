"""Stubs under the gateway's certificate that sign the principal set with :func:`acting_as` (as the gateway
does for its authenticated callers): for tests that call the store and the kms as a given end caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from coffer.api.kms.v1 import kms_pb2_grpc
from coffer.api.store.v1 import store_pb2_grpc
from coffer.api.usage.v1 import usage_pb2_grpc
from coffer.pki import SIGNING_KEY
from coffer.rpc.assertions import PrincipalSigner
from coffer.rpc.channel import secure_channel
from coffer.rpc.context import principal_var
from coffer.rpc.tls import TlsFiles

from .conftest import StoreStack


@contextmanager
def acting_as(principal: str) -> Iterator[None]:
    token = principal_var.set(principal)
    try:
        yield
    finally:
        principal_var.reset(token)


@dataclass
class Clients:
    store: store_pb2_grpc.SecretStoreServiceStub
    kms: kms_pb2_grpc.KeyManagementServiceStub
    usage: usage_pb2_grpc.UsageServiceStub


@asynccontextmanager
async def signed_clients(stack: StoreStack) -> AsyncIterator[Clients]:
    key = serialization.load_pem_private_key((stack.settings.pki_dir / SIGNING_KEY).read_bytes(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    signer = PrincipalSigner(key)
    tls = TlsFiles.for_identity(stack.settings.pki_dir, "gateway")
    store_channel = secure_channel(
        f"127.0.0.1:{stack.store_runtime.port}", tls, server_name="store", signer=signer
    )
    kms_channel = secure_channel(f"127.0.0.1:{stack.kms_runtime.port}", tls, server_name="kms", signer=signer)
    try:
        yield Clients(
            store=store_pb2_grpc.SecretStoreServiceStub(store_channel),
            kms=kms_pb2_grpc.KeyManagementServiceStub(kms_channel),
            usage=usage_pb2_grpc.UsageServiceStub(store_channel),
        )
    finally:
        await store_channel.close()
        await kms_channel.close()

"""Fixtures for the kms integration tests: the real service on port 0 (``coffer.testing.stack``) against a
fresh PostgreSQL database under its own role, with a movable clock, and mTLS client stubs under the "store"
and "gateway" identities."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.core import errors
from coffer.crypto.rootkey import RootKey
from coffer.kms.__main__ import KmsRuntime
from coffer.rootkey_file import ensure_root_key
from coffer.rpc.channel import secure_channel
from coffer.rpc.tls import TlsFiles
from coffer.settings import Settings
from coffer.testing.clock import ManualClock
from coffer.testing.stack import ADMIN_CREDENTIALS_FILE, provisioned_stack

REGION = "local-1"
ACCOUNT = "000000000000"


@dataclass
class KmsHarness:
    runtime: KmsRuntime
    settings: Settings
    clock: ManualClock
    root_key: RootKey
    store: kms_pb2_grpc.KeyManagementServiceStub
    gateway: kms_pb2_grpc.KeyManagementServiceStub
    stub_for: Callable[[str], kms_pb2_grpc.KeyManagementServiceStub]
    #: The AWS managed key ``alias/aws/secretsmanager`` (created by the store for the bootstrap key's secret;
    #: "" when ``admin_secret_sealed`` is False).
    aws_managed_key_id: str

    async def fails(
        self, call: Awaitable[Any], kind: type[errors.CofferError], message: str | None = None
    ) -> errors.CofferError:
        """Await ``call``; assert it raised ``kind`` (with exactly ``message`` if given); return it."""
        with pytest.raises(kind) as info:
            await call
        if message is not None:
            assert info.value.message == message
        return info.value

    def arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"

    def alias_arn(self, name: str) -> str:
        return f"arn:aws:kms:{REGION}:{ACCOUNT}:{name}"


@pytest.fixture
def admin_secret_sealed() -> bool:
    """Whether the store seals the bootstrap admin key's secret (creating the AWS managed key) before the
    test starts; a test that needs a kms with no key at all parametrizes it to False."""
    return True


@pytest.fixture
def purge_interval() -> float:
    """Long by default so the background loop stays out of the way; tests call run_maintenance themselves."""
    return 3600.0


@pytest.fixture
async def kms(
    database_url: str, pki_dir: Path, tmp_path: Path, purge_interval: float, admin_secret_sealed: bool
) -> AsyncIterator[KmsHarness]:
    services = await provisioned_stack(
        home=tmp_path,
        pki_dir=pki_dir,
        database_url=database_url,
        COFFER_REGION=REGION,
        COFFER_ACCOUNT_ID=ACCOUNT,
        COFFER_PURGE_INTERVAL_SECONDS=str(purge_interval),
    )
    settings = services.settings("kms")
    root_key = ensure_root_key(settings.root_key_file)
    clock = ManualClock()
    runtime = await services.start_kms(clock=clock)
    # The store holds the audit trail: the kms records the calls of the gateway (public calls) there.
    if not admin_secret_sealed:  # the secret's file gone, the store has nothing to seal
        (tmp_path / ADMIN_CREDENTIALS_FILE).unlink()
    await services.start_store()
    if admin_secret_sealed:
        # The store seals the bootstrap admin key's secret under the AWS managed key, creating it: the test
        # starts with that one key (and its alias) in the kms.
        await services.bootstrap_sealed()
    channels = []

    def stub_for(identity: str) -> kms_pb2_grpc.KeyManagementServiceStub:
        channel = secure_channel(
            f"127.0.0.1:{runtime.port}", TlsFiles.for_identity(pki_dir, identity), server_name="kms"
        )
        channels.append(channel)
        return kms_pb2_grpc.KeyManagementServiceStub(channel)

    try:
        store_stub = stub_for("store")
        aws_key_id = ""
        if admin_secret_sealed:
            described = await store_stub.DescribeKey(
                kms_pb2.DescribeKeyRequest(key_id="alias/aws/secretsmanager")
            )
            aws_key_id = described.key_metadata.key_id
        yield KmsHarness(
            runtime=runtime,
            settings=settings,
            clock=clock,
            root_key=root_key,
            store=store_stub,
            gateway=stub_for("gateway"),
            stub_for=stub_for,
            aws_managed_key_id=aws_key_id,
        )
    finally:
        for channel in channels:
            await channel.close()
        await services.aclose()

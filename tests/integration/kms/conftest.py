"""Fixtures for the kms integration tests: the real service (``serve``) on port 0 against a fresh PostgreSQL
database, with a movable clock, and mTLS client stubs under the "store" and "gateway" identities."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coffer.api.kms.v1 import kms_pb2_grpc
from coffer.core import errors
from coffer.crypto.rootkey import RootKey
from coffer.kms.__main__ import KmsRuntime, serve
from coffer.rootkey_file import ensure_root_key
from coffer.rpc.channel import secure_channel
from coffer.rpc.tls import TlsFiles
from coffer.settings import Settings
from coffer.testing.clock import ManualClock

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


def kms_settings(*, database_url: str, pki_dir: Path, root_key_file: Path, purge_interval: float) -> Settings:
    return Settings.from_env(
        {
            "COFFER_HOME": str(root_key_file.parent.parent),
            "COFFER_DATABASE_URL": database_url,
            "COFFER_PKI_DIR": str(pki_dir),
            "COFFER_ROOT_KEY_FILE": str(root_key_file),
            "COFFER_KMS_ADDR": "127.0.0.1:0",
            "COFFER_REGION": REGION,
            "COFFER_ACCOUNT_ID": ACCOUNT,
            "COFFER_PURGE_INTERVAL_SECONDS": str(purge_interval),
        }
    )


@pytest.fixture
def purge_interval() -> float:
    """Long by default so the background loop stays out of the way; tests call run_maintenance themselves."""
    return 3600.0


@pytest.fixture
async def kms(
    database_url: str, pki_dir: Path, tmp_path: Path, purge_interval: float
) -> AsyncIterator[KmsHarness]:
    root_file = tmp_path / "keys" / "root.key"
    root_key = ensure_root_key(root_file)
    settings = kms_settings(
        database_url=database_url, pki_dir=pki_dir, root_key_file=root_file, purge_interval=purge_interval
    )
    clock = ManualClock()
    runtime = await serve(settings, clock=clock)
    channels = []

    def stub_for(identity: str) -> kms_pb2_grpc.KeyManagementServiceStub:
        channel = secure_channel(
            f"127.0.0.1:{runtime.port}", TlsFiles.for_identity(pki_dir, identity), server_name="kms"
        )
        channels.append(channel)
        return kms_pb2_grpc.KeyManagementServiceStub(channel)

    try:
        yield KmsHarness(
            runtime=runtime,
            settings=settings,
            clock=clock,
            root_key=root_key,
            store=stub_for("store"),
            gateway=stub_for("gateway"),
            stub_for=stub_for,
        )
    finally:
        for channel in channels:
            await channel.close()
        await runtime.aclose()

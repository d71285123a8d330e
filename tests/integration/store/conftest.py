"""Fixtures for the store integration tests: the real kms service and the real store service, in-process on
port 0 (``coffer.testing.stack``) against one fresh PostgreSQL database, each with its own database role, with
one movable clock; clients speak gRPC over mTLS.

* ``stack.store`` - SecretStoreService stub under the "gateway" identity (``coffer.rpc.channel``: errors come
  back as CofferError subclasses whose ``code`` is ErrorInfo.reason);
* ``stack.raw`` - the same over a plain grpc.aio channel, to see the wire status code of a failure;
* ``stack.kms`` - KeyManagementService stub under the "store" identity (to create, disable, schedule keys);
* ``stack.db`` - an administrator's asyncpg connection to the same database (to count rows and tamper with
  ciphertexts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from coffer.api.kms.v1 import kms_pb2_grpc
from coffer.api.store.v1 import store_pb2_grpc
from coffer.crypto.rootkey import RootKey
from coffer.kms.__main__ import KmsRuntime
from coffer.rpc.channel import secure_channel
from coffer.rpc.tls import TlsFiles, channel_credentials, name_options, service_host
from coffer.settings import Settings
from coffer.store.__main__ import StoreRuntime
from coffer.testing.clock import ManualClock
from coffer.testing.stack import provisioned_stack

REGION = "local-1"
ACCOUNT = "000000000000"


@dataclass
class StoreStack:
    store_runtime: StoreRuntime
    kms_runtime: KmsRuntime
    settings: Settings
    clock: ManualClock
    store: store_pb2_grpc.SecretStoreServiceStub
    raw: store_pb2_grpc.SecretStoreServiceStub
    kms: kms_pb2_grpc.KeyManagementServiceStub
    db: asyncpg.Connection

    async def counts(self) -> dict[str, int]:
        """Rows per store table (to prove a failed call wrote nothing)."""
        out: dict[str, int] = {}
        for table in ("secrets", "versions", "labels", "outbox"):
            out[table] = int(await self.db.fetchval(f"SELECT count(*) FROM store.{table}"))
        return out


@pytest.fixture
async def stack(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[StoreStack]:
    clock = ManualClock()
    services = await provisioned_stack(
        home=tmp_path,
        pki_dir=pki_dir,
        database_url=database_url,
        COFFER_REGION=REGION,
        COFFER_ACCOUNT_ID=ACCOUNT,
        # The tests run purges themselves (with a moved clock) rather than waiting for the loops.
        COFFER_PURGE_INTERVAL_SECONDS="3600",
        # The tests register rotation functions on loopback (Coffer's own endpoints stay refused).
        COFFER_ROTATION_ALLOWED_TARGETS="127.0.0.1",
    )
    closers: list[Any] = [services.aclose]
    try:
        kms_runtime = await services.start_kms(clock=clock, root_key=RootKey.generate())
        settings = services.settings("store")  # on port 0: a test may start a second store with it
        store_runtime = await services.start_store(clock=clock)
        await services.bootstrap_sealed()  # its data key and audit lines come before the test's
        target = f"127.0.0.1:{store_runtime.port}"
        channel = secure_channel(target, TlsFiles.for_identity(pki_dir, "gateway"), server_name="store")
        closers.append(channel.close)
        raw_channel = grpc.aio.secure_channel(
            target,
            channel_credentials(TlsFiles.for_identity(pki_dir, "gateway")),
            options=name_options(service_host("store")),
        )
        closers.append(raw_channel.close)
        kms_channel = secure_channel(
            f"127.0.0.1:{kms_runtime.port}", TlsFiles.for_identity(pki_dir, "store"), server_name="kms"
        )
        closers.append(kms_channel.close)
        db = await asyncpg.connect(database_url)
        closers.append(db.close)
        yield StoreStack(
            store_runtime=store_runtime,
            kms_runtime=kms_runtime,
            settings=settings,
            clock=clock,
            store=store_pb2_grpc.SecretStoreServiceStub(channel),
            raw=store_pb2_grpc.SecretStoreServiceStub(raw_channel),
            kms=kms_pb2_grpc.KeyManagementServiceStub(kms_channel),
            db=db,
        )
    finally:
        for close in reversed(closers):
            await close()

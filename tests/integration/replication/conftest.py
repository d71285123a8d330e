"""Two regions in one test: for each, its own PostgreSQL database (kms and store each under its own role), PKI
(CA), KMS (own root key) and store, in-process (``coffer.testing.stack``), configured as each other's peers.
The store ports are picked first (``free_port``) so each region's settings can name the other's endpoint; a
region's store can be stopped and started again on the same port (the peer-down tests).

* ``Region.store`` - SecretStoreService stub under that region's own "gateway" identity;
* ``Region.kms`` - KeyManagementService stub under that region's "store" identity;
* ``Region.db`` - an asyncpg connection to that region's database.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest

from coffer import dbroles
from coffer.api.kms.v1 import kms_pb2_grpc
from coffer.api.store.v1 import store_pb2_grpc
from coffer.crypto.rootkey import RootKey
from coffer.embedded import EmbeddedPostgres, free_port
from coffer.kms.__main__ import KmsRuntime
from coffer.pki import ensure_pki
from coffer.rpc.channel import secure_channel
from coffer.rpc.tls import TlsFiles
from coffer.settings import Settings
from coffer.store.__main__ import StoreRuntime
from coffer.store.__main__ import serve as serve_store
from coffer.testing.faultproxy import FaultProxy
from coffer.testing.stack import ServiceStack, provisioned_stack

ACCOUNT = "000000000000"


@dataclass
class Region:
    name: str
    pki: Path
    settings: Settings
    kms_runtime: KmsRuntime
    db: asyncpg.Connection
    store_runtime: StoreRuntime | None = None
    store: store_pb2_grpc.SecretStoreServiceStub = field(init=False)
    kms: kms_pb2_grpc.KeyManagementServiceStub = field(init=False)
    services: ServiceStack | None = None
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def runtime(self) -> StoreRuntime:
        assert self.store_runtime is not None
        return self.store_runtime

    def channel(
        self, identity: str, *, pki: Path | None = None, target: str | None = None
    ) -> grpc.aio.Channel:
        """A channel to this region's store presenting ``identity`` from ``pki`` (default: ours)."""
        own = pki or self.pki
        tls = TlsFiles(ca=self.pki / "ca.crt", cert=own / f"{identity}.crt", key=own / f"{identity}.key")
        ch = secure_channel(target or self.settings.store_addr, tls, server_name="store")
        self._channels.append(ch)
        return ch

    async def start_store(self) -> None:
        self.store_runtime = await serve_store(self.settings)

    async def stop_store(self) -> None:
        if self.store_runtime is not None:
            await self.store_runtime.aclose(grace=1.0)
            self.store_runtime = None

    async def aclose(self) -> None:
        for ch in self._channels:
            await ch.close()
        await self.stop_store()
        if self.services is not None:
            await self.services.aclose()
        await self.db.close()


@dataclass
class TwoRegions:
    r1: Region
    r2: Region
    #: The fault-injecting proxy local-1's store reaches local-2's through (``peer_link`` True), else None.
    link: FaultProxy | None = None


@pytest.fixture
def peer_link() -> bool:
    """Whether local-1 reaches local-2's store through a ``FaultProxy`` (the link-fault tests say True)."""
    return False


async def _new_database(pg_server: EmbeddedPostgres) -> str:
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_server.url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def _drop_database(pg_server: EmbeddedPostgres, name: str) -> None:
    admin = await asyncpg.connect(pg_server.url())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def region_pkis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for region in ("local-1", "local-2"):
        d = tmp_path_factory.mktemp(f"pki-{region}")
        ensure_pki(d, region=region)
        out[region] = d
    return out


@pytest.fixture
async def regions(
    tmp_path: Path,
    region_pkis: dict[str, Path],
    database_url: str,
    pg_server: EmbeddedPostgres,
    peer_link: bool,
) -> AsyncIterator[TwoRegions]:
    second_db = await _new_database(pg_server)
    urls = {"local-1": database_url, "local-2": pg_server.url(second_db)}
    ports = {"local-1": free_port(), "local-2": free_port()}
    link = await FaultProxy("127.0.0.1", ports["local-2"]).start() if peer_link else None
    reach = {**ports, "local-2": link.port} if link is not None else dict(ports)  # as local-1 dials them
    made: list[Region] = []
    try:
        for name, other in (("local-1", "local-2"), ("local-2", "local-1")):
            peers = (
                f'[{{"region": "{other}", "endpoint": "127.0.0.1:{reach[other]}",'
                f' "ca_file": "{region_pkis[other] / "ca.crt"}"}}]'
            )
            services = await provisioned_stack(
                home=tmp_path / name,
                pki_dir=region_pkis[name],
                database_url=urls[name],
                COFFER_STORE_ADDR=f"127.0.0.1:{ports[name]}",
                COFFER_REGION=name,
                COFFER_ACCOUNT_ID=ACCOUNT,
                COFFER_PURGE_INTERVAL_SECONDS="3600",
                COFFER_PEERS=peers,
                COFFER_REPLICATION_INTERVAL_SECONDS="0.2",
            )
            kms_runtime = await services.start_kms(root_key=RootKey.generate())
            db = await asyncpg.connect(urls[name])
            region = Region(
                name=name,
                pki=region_pkis[name],
                settings=services.settings("store"),
                kms_runtime=kms_runtime,
                db=db,
                services=services,
            )
            made.append(region)
            await region.start_store()
            region.store = store_pb2_grpc.SecretStoreServiceStub(region.channel("gateway"))
            kms_channel = secure_channel(
                f"127.0.0.1:{kms_runtime.port}",
                TlsFiles.for_identity(region.pki, "store"),
                server_name="kms",
            )
            region._channels.append(kms_channel)
            region.kms = kms_pb2_grpc.KeyManagementServiceStub(kms_channel)
        yield TwoRegions(r1=made[0], r2=made[1], link=link)
    finally:
        for region in reversed(made):
            await region.aclose()
        if link is not None:
            await link.stop()
        await _drop_database(pg_server, second_db)
        await dbroles.drop_roles(pg_server.url(), second_db)

"""Composition root of the kms service: settings → root key → PostgreSQL pool (+ migrations) → app → gRPC
server (mTLS, peers store and gateway) → purge/rotation loop. ``python -m coffer.kms``.

The kms resolves its callers (the end caller a verified assertion names) through the store's principal
directory (``coffer.principal_directory.DirectoryCache``: cached, dropped by the store's change stream); the
channel to the store is opened lazily, since the kms starts first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import structlog
from grpc_health.v1 import health_pb2

from coffer import db
from coffer.api.iam.v1 import directory_pb2_grpc
from coffer.api.kms.v1 import kms_pb2_grpc
from coffer.audit import StructlogAudit
from coffer.audit_trail import KMS_SOURCE, AppendTrail, PublicAudit
from coffer.clock import Clock, SystemClock
from coffer.crypto.rootkey import RootKey
from coffer.kms.app import KmsApp
from coffer.kms.key_events import SERVICE_NAME as EVENTS_SERVICE_NAME
from coffer.kms.key_events import WATCHERS, KeyEventsServicer, key_change_hub
from coffer.kms.keystore import PgKeyStore, migrate
from coffer.kms.maintenance import MaintenanceLoop
from coffer.kms.model import MaintenanceReport, Scope
from coffer.kms.seal import PgSealStore, Seal, SealMode, SealStatus
from coffer.kms.seal_servicer import SERVICE_NAME as SEAL_SERVICE_NAME
from coffer.kms.seal_servicer import SealServicer
from coffer.kms.servicer import SERVICE_NAME, KmsServicer
from coffer.pgnotify import NotifyHub
from coffer.pki import SIGNING_PUB
from coffer.principal_directory import DirectoryCache
from coffer.rootkey_file import RootKeyFileError, load_root_key
from coffer.rpc.assertions import PrincipalVerifier
from coffer.rpc.channel import FAST_RECONNECT, secure_channel
from coffer.rpc.server import (
    PeerPolicy,
    RunningServer,
    service_main,
    start_server,
)
from coffer.rpc.tls import TlsFiles
from coffer.settings import Settings

log = structlog.get_logger("coffer.kms")

#: The store calls every RPC; the gateway forwards key management and crypto calls for the CLI (crypto on the
#: AWS-managed default key is refused to it by the app). Both may call for an end caller, named by the
#: gateway's principal assertion (the store forwards the one it verified). Only the store follows key changes
#: (KeyEventsService). Only the gateway reaches the seal (for operators: it checks who may seal and unseal).
PEERS = PeerPolicy(
    default=frozenset({"store", "gateway"}),
    per_method={
        f"/{EVENTS_SERVICE_NAME}/WatchKeyChanges": WATCHERS,
        f"/{EVENTS_SERVICE_NAME}/DescribeKeyPolicy": WATCHERS,
        **{
            f"/{SEAL_SERVICE_NAME}/{m}": frozenset({"gateway"})
            for m in ("OperatorInit", "OperatorUnseal", "OperatorSeal", "OperatorStatus")
        },
    },
    forwarders=frozenset({"store", "gateway"}),
)


@dataclass
class KmsRuntime:
    port: int
    app: KmsApp
    server: RunningServer
    pool: asyncpg.Pool
    maintenance: MaintenanceLoop
    key_changes: NotifyHub
    seal: Seal
    directory: DirectoryCache
    store_channel: grpc.aio.Channel
    #: Where the events of the public calls this kms serves go (the store's AuditIngestService).
    audit_trail: AppendTrail

    async def run_maintenance(self) -> MaintenanceReport:
        """One purge/rotation round now (tests move the clock and call this instead of waiting)."""
        return await self.app.run_maintenance()

    async def use_store(self, addr: str, pki_dir: Path) -> None:
        """Resolve callers through the store at ``addr`` (test stacks start the kms before they know the
        store's port)."""
        old, self.store_channel = (
            self.store_channel,
            secure_channel(addr, TlsFiles.for_identity(pki_dir, "kms"), server_name="store"),
        )
        await self.directory.retarget(directory_pb2_grpc.PrincipalDirectoryServiceStub(self.store_channel))
        await old.close()

    async def aclose(self) -> None:
        await self.maintenance.stop()
        await self.key_changes.aclose()  # ends the watch streams, so the server stops without waiting on them
        await self.server.stop(grace=2.0)
        await self.directory.aclose()
        await self.store_channel.close()
        await self.audit_trail.aclose()
        await self.pool.close()


async def serve(
    settings: Settings, *, clock: Clock | None = None, root_key: RootKey | None = None
) -> KmsRuntime:
    """Start the kms service. ``clock`` and ``root_key`` are for tests; by default the key is read from
    ``settings.root_key_file`` (a missing file fails with a clear ``RootKeyFileError``). With
    ``COFFER_SEAL=shamir`` no root key file is read: the kms starts sealed (``coffer.kms.seal``), its crypto
    service reported NOT_SERVING until operators unseal it."""
    mode = SealMode.parse(settings.seal)
    root: RootKey | None = None
    if mode is SealMode.FILE:
        root = root_key if root_key is not None else load_root_key(settings.root_key_file)
    if settings.purge_interval_seconds <= 0:
        raise RuntimeError("kms: COFFER_PURGE_INTERVAL_SECONDS must be positive")
    scope = Scope(partition=settings.partition, region=settings.region, account_id=settings.account_id)
    pool = await db.create_pool(settings.database_url, service="kms")
    hub = key_change_hub(settings.database_url)
    store_channel = secure_channel(
        settings.store_addr,
        TlsFiles.for_identity(settings.pki_dir, "kms"),
        server_name="store",
        options=FAST_RECONNECT,
    )
    directory = DirectoryCache(directory_pb2_grpc.PrincipalDirectoryServiceStub(store_channel), name="kms")
    try:
        applied = await migrate(pool)
        if applied:
            log.info("kms.migrated", versions=applied)
        store = PgKeyStore(pool, scope)
        if root is not None:
            foreign = await store.root_key_ids() - {root.key_id}
            if foreign:
                raise RootKeyFileError(
                    f"kms: stored key material is wrapped under root key id(s) {sorted(foreign)}, but the "
                    f"loaded root key has id {root.key_id}; this database needs its original root key file"
                )
            seal = Seal.file(root)
        else:
            seal = Seal(mode=SealMode.SHAMIR, store=PgSealStore(pool))
            await seal.load()
        app = KmsApp(store=store, root_key=seal, scope=scope, clock=clock or SystemClock())
        loop = MaintenanceLoop(run=app.run_maintenance, interval=settings.purge_interval_seconds)
        await hub.start()

        def register(server: grpc.aio.Server) -> list[str]:
            kms_pb2_grpc.add_KeyManagementServiceServicer_to_server(KmsServicer(app), server)
            kms_pb2_grpc.add_KeyEventsServiceServicer_to_server(KeyEventsServicer(hub, app), server)
            kms_pb2_grpc.add_SealServiceServicer_to_server(SealServicer(seal), server)
            return [SERVICE_NAME, EVENTS_SERVICE_NAME, SEAL_SERVICE_NAME]

        tls = TlsFiles.for_identity(settings.pki_dir, "kms")
        audit_trail = AppendTrail(
            lambda address: secure_channel(address, tls, server_name="store"),
            settings.store_addr,
            name="kms-audit-append",
        )
        server = await start_server(
            service="kms",
            bind=settings.kms_addr,
            health_bind=settings.health_addr or None,
            tls=TlsFiles.for_identity(settings.pki_dir, "kms"),
            register=register,
            peers=PEERS,
            assertions=PrincipalVerifier.from_file(settings.pki_dir / SIGNING_PUB, audience="kms"),
            audit=StructlogAudit(),
            resolve_caller=directory.resolve_caller,
            # The gateway's calls are the public ones; their events are stored by the store (fail closed).
            public_audit=PublicAudit(
                trail=audit_trail,
                sources={SERVICE_NAME: KMS_SOURCE, SEAL_SERVICE_NAME: KMS_SOURCE},
                region=settings.region,
            ),
        )
        running = server

        async def on_seal_change(status: SealStatus) -> None:
            # The crypto service serves only while the root key is in memory; when it is dropped, the store
            # is told to drop the data keys it caches too (a reset of the key-change stream).
            serving = health_pb2.HealthCheckResponse.SERVING
            if status.sealed:
                serving = health_pb2.HealthCheckResponse.NOT_SERVING
                log.warning("kms.crypto_not_serving", reason=seal.reason)
                hub.reset()
            await running.health.set(SERVICE_NAME, serving)

        seal.on_change = on_seal_change
        if seal.sealed:
            await on_seal_change(seal.status())
    except BaseException:
        await hub.aclose()
        await store_channel.close()
        await pool.close()
        raise
    loop.start()
    directory.start()  # follows the store's principal changes once the store is up
    return KmsRuntime(
        port=server.port,
        app=app,
        server=server,
        pool=pool,
        maintenance=loop,
        key_changes=hub,
        seal=seal,
        directory=directory,
        store_channel=store_channel,
        audit_trail=audit_trail,
    )


def main() -> None:
    service_main("kms", serve, startup_errors=(RootKeyFileError,))


if __name__ == "__main__":
    main()

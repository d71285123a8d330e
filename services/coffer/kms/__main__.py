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
from coffer.kms.hsm import Hsm, HsmConfig, HsmRoot
from coffer.kms.key_events import SERVICE_NAME as EVENTS_SERVICE_NAME
from coffer.kms.key_events import WATCHERS, KeyEventsServicer, key_change_hub
from coffer.kms.keystore import PgKeyStore, migrate
from coffer.kms.maintenance import MaintenanceLoop
from coffer.kms.model import MaintenanceReport, Scope
from coffer.kms.rekey import PgRotationStore, RootRotator, next_file, remove_file
from coffer.kms.seal import PgSealStore, Root, Seal, SealMode, SealStatus, SoftRoot
from coffer.kms.seal_servicer import SERVICE_NAME as SEAL_SERVICE_NAME
from coffer.kms.seal_servicer import SealServicer
from coffer.kms.servicer import SERVICE_NAME, KmsServicer
from coffer.leader import LEADER_RETRY_SECONDS, Leadership
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
            for m in (
                "OperatorInit",
                "OperatorUnseal",
                "OperatorSeal",
                "OperatorStatus",
                "OperatorRotateRoot",
                "OperatorMigrateSeal",
            )
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
    rotator: RootRotator
    hsm: Hsm | None = None

    async def run_maintenance(self) -> MaintenanceReport:
        """One purge/rotation round now (tests move the clock and call this instead of waiting)."""
        return await self.app.run_maintenance()

    async def use_store(self, addr: str, pki_dir: Path) -> None:
        """Resolve callers through, and send audit events to, the store at ``addr`` (test stacks start the
        kms before they know the store's port)."""
        old, self.store_channel = (
            self.store_channel,
            secure_channel(addr, TlsFiles.for_identity(pki_dir, "kms"), server_name="store"),
        )
        await self.directory.retarget(directory_pb2_grpc.PrincipalDirectoryServiceStub(self.store_channel))
        self.audit_trail.retarget(addr)
        await old.close()

    async def aclose(self) -> None:
        await self.rotator.aclose()
        await self.maintenance.stop()
        await self.key_changes.aclose()  # ends the watch streams, so the server stops without waiting on them
        await self.server.stop(grace=2.0)
        await self.directory.aclose()
        await self.store_channel.close()
        await self.audit_trail.aclose()
        await self.pool.close()
        if self.hsm is not None:
            await self.hsm.aclose()


def _hsm_config(settings: Settings) -> HsmConfig | None:
    if not settings.pkcs11_token_label:
        return None
    return HsmConfig.from_settings(
        module=settings.pkcs11_module,
        token_label=settings.pkcs11_token_label,
        pin=settings.pkcs11_pin,
        pin_file=settings.pkcs11_pin_file,
        key_label=settings.pkcs11_key_label,
    )


async def _file_seal(root: RootKey, settings: Settings, rotations: PgRotationStore, hsm: Hsm | None) -> Seal:
    """The file seal, with a rotation or migration under way resumed, and the leftovers of a finished one
    cleared."""
    record = await rotations.load_rotation()
    nxt = next_file(settings.root_key_file)
    materials = await rotations.root_key_ids()
    if record is None:
        if await rotations.has_seal_record() or await rotations.hsm_root() is not None:
            # a finished migration to another seal: its last step (removing the root key files) is done here
            remove_file(settings.root_key_file)
            remove_file(nxt)
            raise RootKeyFileError(
                "kms: this deployment was migrated to another seal (coffer operator migrate-seal): set "
                "COFFER_SEAL to 'shamir' or 'pkcs11' as chosen and start again; the root key file was removed"
            )
        if nxt.exists():
            successor = load_root_key(nxt)
            if successor.key_id in materials and root.key_id not in materials:
                # a rotation committed but the new file had not replaced the old one yet
                nxt.replace(settings.root_key_file)
                root = successor
            else:  # written by a rotation that never started
                remove_file(nxt)
        return Seal.file(root)
    if root.key_id != record.old_root_key_id:
        raise RootKeyFileError(
            f"kms: a {record.kind} from root key {record.old_root_key_id} is under way but the root key file "
            f"holds {root.key_id}"
        )
    roots: list[Root] = [SoftRoot(root)]
    if record.to_mode is SealMode.PKCS11:
        if hsm is None:
            raise RootKeyFileError(
                "kms: a migration to the pkcs11 seal is under way: configure COFFER_PKCS11_* to finish it"
            )
        await hsm.check(record.new_root_key_id)
        roots.append(HsmRoot(hsm, record.new_root_key_id))
    else:
        roots.append(SoftRoot(load_root_key(nxt)))
    seal = Seal(mode=SealMode.FILE, store=None, roots=roots)
    seal.set_rotation(record)
    return seal


async def _pkcs11_seal(hsm: Hsm, settings: Settings, rotations: PgRotationStore) -> Seal:
    """The pkcs11 seal: the current HSM key (generated on first start), plus a rotation's new one."""
    record = await rotations.load_rotation()
    current = await rotations.hsm_root()
    materials = await rotations.root_key_ids()
    if current is None:
        if record is not None:
            raise RootKeyFileError(
                "kms: a migration from the file seal is under way: finish it with COFFER_SEAL=file first"
            )
        if materials:
            raise RootKeyFileError(
                f"kms: stored key material is wrapped under root key id(s) {sorted(materials)} "
                "of another seal: "
                "move it with `coffer operator migrate-seal --to pkcs11` in that seal mode"
            )
        existing = await hsm.key_ids()
        if len(existing) > 1:
            raise RootKeyFileError(
                f"kms: the {hsm.name} holds {len(existing)} keys labelled '{settings.pkcs11_key_label}' and "
                "this database names none of them: give this deployment its own COFFER_PKCS11_KEY_LABEL"
            )
        current = existing[0] if existing else await hsm.generate()
        await rotations.insert_hsm_root(settings.pkcs11_key_label, current)
    keep = {current} | ({record.old_root_key_id, record.new_root_key_id} if record else set())
    for stale in (
        set(await hsm.key_ids()) - keep
    ):  # a rotation's old key not destroyed, or a new one never used
        await hsm.destroy(stale)
    roots: list[Root] = []
    for key_id in [current] + (
        [record.new_root_key_id] if record and record.new_root_key_id != current else []
    ):
        await hsm.check(key_id)
        roots.append(HsmRoot(hsm, key_id))
    foreign = materials - {r.key_id for r in roots}
    if foreign:
        raise RootKeyFileError(
            f"kms: stored key material is wrapped under unknown root key id(s) {sorted(foreign)}"
        )
    seal = Seal(mode=SealMode.PKCS11, roots=roots)
    seal.set_rotation(record)
    if settings.root_key_file.exists() and load_root_key(settings.root_key_file).key_id not in materials:
        remove_file(settings.root_key_file)  # a migration's last step, not done by the file-mode kms
    return seal


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
    try:
        hsm_config = _hsm_config(settings)
    except ValueError as exc:
        raise RootKeyFileError(f"kms: {exc}") from None
    if mode is SealMode.PKCS11 and hsm_config is None:
        raise RootKeyFileError(
            "kms: COFFER_SEAL=pkcs11 needs COFFER_PKCS11_TOKEN_LABEL and COFFER_PKCS11_PIN_FILE (or _PIN)"
        )
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
    hsm = Hsm(hsm_config) if hsm_config is not None else None
    try:
        applied = await migrate(pool)
        if applied:
            log.info("kms.migrated", versions=applied)
        store = PgKeyStore(pool, scope)
        rotations = PgRotationStore(pool)
        if root is not None:
            seal = await _file_seal(root, settings, rotations, hsm)
            foreign = await store.root_key_ids() - seal.root_ids()
            if foreign:
                raise RootKeyFileError(
                    f"kms: stored key material is wrapped under root key id(s) {sorted(foreign)}, but the "
                    f"loaded root key has id {root.key_id}; this database needs its original root key file"
                )
        elif mode is SealMode.PKCS11:
            assert hsm is not None
            seal = await _pkcs11_seal(hsm, settings, rotations)
        else:
            seal = Seal(mode=SealMode.SHAMIR, store=PgSealStore(pool))
            await seal.load()
        rotator = RootRotator(
            seal=seal,
            store=rotations,
            root_file=settings.root_key_file,
            hsm=hsm,
            hsm_label=settings.pkcs11_key_label,
            batch=settings.root_rotation_batch,
            stop_after=settings.root_rotation_stop_after,
        )
        app = KmsApp(store=store, root_key=seal, scope=scope, clock=clock or SystemClock())
        loop = MaintenanceLoop(
            run=app.run_maintenance,
            interval=settings.purge_interval_seconds,
            leadership=Leadership(
                settings.database_url, "kms.maintenance", retry_seconds=LEADER_RETRY_SECONDS
            ),
        )
        await hub.start()

        def register(server: grpc.aio.Server) -> list[str]:
            kms_pb2_grpc.add_KeyManagementServiceServicer_to_server(KmsServicer(app), server)
            kms_pb2_grpc.add_KeyEventsServiceServicer_to_server(KeyEventsServicer(hub, app), server)
            kms_pb2_grpc.add_SealServiceServicer_to_server(SealServicer(seal, rotator), server)
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
            metrics_bind=settings.metrics_addr or None,
            tls=TlsFiles.for_identity(settings.pki_dir, "kms"),
            register=register,
            peers=PEERS,
            assertions=PrincipalVerifier.from_file(settings.pki_dir / SIGNING_PUB, audience="kms"),
            audit=StructlogAudit(),
            resolve_caller=directory.resolve_caller,
            # The gateway's calls are the public ones; their events are stored by the store (fail closed).
            public_audit=None
            if settings.unsafe_bench_bypass
            else PublicAudit(
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
            if not status.sealed:
                rotator.resume()  # a rotation under way when the kms stopped or was sealed

        seal.on_change = on_seal_change
        if seal.sealed:
            await on_seal_change(seal.status())
    except BaseException:
        await hub.aclose()
        await store_channel.close()
        await pool.close()
        if hsm is not None:
            await hsm.aclose()
        raise
    loop.start()
    directory.start()  # follows the store's principal changes once the store is up
    rotator.resume()
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
        rotator=rotator,
        hsm=hsm,
    )


def main() -> None:
    service_main("kms", serve, startup_errors=(RootKeyFileError,))


if __name__ == "__main__":
    main()

"""The store service process (composition root): settings -> PostgreSQL pool (migrations applied) -> KMS
channel + data-key cache following the kms's key-change stream -> use cases -> gRPC server (mTLS) -> purge
loop.

``serve(settings)`` starts everything and returns a :class:`StoreRuntime`; ``python -m coffer.store`` runs it
until SIGTERM/SIGINT. Tests pass ``clock=`` to move time (e.g. to see a recovery window end) and may call
:meth:`StoreRuntime.purge_now` instead of waiting for the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import asyncpg
import grpc

from coffer import logs
from coffer.api.audit.v1 import audit_pb2, audit_pb2_grpc
from coffer.api.iam.v1 import directory_pb2_grpc, iam_pb2, iam_pb2_grpc
from coffer.api.kms.v1 import kms_pb2_grpc
from coffer.api.replication.v1 import replication_pb2, replication_pb2_grpc
from coffer.api.store.v1 import store_pb2, store_pb2_grpc
from coffer.api.usage.v1 import usage_pb2_grpc
from coffer.audit import StructlogAudit
from coffer.audit_trail import ACTION_SOURCES, CLOUDTRAIL_SOURCE, SECRETS_SOURCE, PublicAudit
from coffer.clock import Clock
from coffer.core import errors
from coffer.core.rotation import RotationPolicy
from coffer.leader import Leadership
from coffer.loops import cancel_and_wait, run_forever
from coffer.pgnotify import NotifyHub
from coffer.pki import AUDIT_KEY, SIGNING_PUB, replicator_identity
from coffer.principal_directory import DIRECTORY_PEERS
from coffer.principal_directory import SERVICE as DIRECTORY_SERVICE
from coffer.rpc.assertions import PrincipalVerifier
from coffer.rpc.channel import secure_channel
from coffer.rpc.server import (
    PeerPolicy,
    RunningServer,
    service_main,
    start_server,
)
from coffer.rpc.tls import TlsFiles
from coffer.settings import Peer, Settings
from coffer.store.access_key_secrets import AccessKeySecrets
from coffer.store.app import StoreApp, StoreConfig
from coffer.store.audit_servicer import AuditIngestServicer, AuditServicer
from coffer.store.audit_trail import StoreAuditTrail, load_signing_key
from coffer.store.due_rotations import rotation_request_hub
from coffer.store.housekeeping import Housekeeper
from coffer.store.iam import (
    IamCore,
    IamRepository,
    IdentityManagementServicer,
    OrganizationsServicer,
    SecurityTokenServicer,
)
from coffer.store.iam_bootstrap import (
    BootstrapKey,
    ensure_root_account,
    keep_sealing_bootstrap_secrets,
    read_bootstrap_keys,
)
from coffer.store.iam_directory import DirectoryServicer, IamDirectory, iam_hub
from coffer.store.key_events import KeyEventsFollower
from coffer.store.key_policies import KeyPolicies, KmsKeyPolicyCheck, grpc_source
from coffer.store.kms_client import DataKeyCache, KmsClient
from coffer.store.replication import ReplicationApp
from coffer.store.replicator import PeerLink, Replicator
from coffer.store.repository import (
    CHANGED_CHANNEL,
    ReplicationRepository,
    StoreRepository,
    apply_migrations,
    create_pool,
)
from coffer.store.rotation import RotationApp
from coffer.store.sealer import ValueSealer
from coffer.store.servicer import ReplicationServicer, RotationControlServicer, SecretStoreServicer
from coffer.store.usage import SERVICE_NAME as USAGE_SERVICE_NAME
from coffer.store.usage import MeteringAudit, UsageMeter, UsageServicer
from coffer.store.watch import SecretWatch
from coffer.targets import TargetGuard

log = logs.get_logger("coffer.store")

SERVICE_NAME = store_pb2.DESCRIPTOR.services_by_name["SecretStoreService"].full_name
CONTROL_SERVICE = store_pb2.DESCRIPTOR.services_by_name["RotationControlService"]
CONTROL_SERVICE_NAME = CONTROL_SERVICE.full_name

AUDIT_SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
AUDIT_INGEST_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditIngestService"]
AUDIT_INGEST_SERVICE_NAME = AUDIT_INGEST_SERVICE.full_name

#: The public calls the store records in the audit trail (from the gateway): service → eventSource.

REPLICATION_SERVICE = replication_pb2.DESCRIPTOR.services_by_name["ReplicationService"]
REPLICATION_SERVICE_NAME = REPLICATION_SERVICE.full_name

#: The public IAM, STS and Organizations services (issue 9): the gateway forwards them here.
IAM_SERVICE_NAMES = tuple(
    iam_pb2.DESCRIPTOR.services_by_name[n].full_name
    for n in ("IdentityManagementService", "SecurityTokenService", "OrganizationsService")
)

#: The gateway calls the store's secrets API, for the end caller its principal assertion names.
#: The internal RotationControlService is for the rotation service only, which calls nothing else here (it
#: reads and writes secrets through the gateway, with its own access key).
STORE_PEERS = PeerPolicy(
    default=frozenset({"gateway"}),
    per_method={
        **{f"/{CONTROL_SERVICE_NAME}/{m.name}": frozenset({"rotation"}) for m in CONTROL_SERVICE.methods},
        # The principal directory: the gateway verifies signatures with it, the kms resolves its callers.
        **{f"/{DIRECTORY_SERVICE.full_name}/{m.name}": DIRECTORY_PEERS for m in DIRECTORY_SERVICE.methods},
        # The kms and the gateway store the events of the public calls they serve themselves.
        **{
            f"/{AUDIT_INGEST_SERVICE_NAME}/{m.name}": frozenset({"gateway", "kms"})
            for m in AUDIT_INGEST_SERVICE.methods
        },
    },
    forwarders=frozenset({"gateway"}),
)


#: How long start-up waits for the kms's key-change stream to open (it keeps trying afterwards).
KEY_EVENTS_WAIT_SECONDS = 5.0


def store_peers(peers: Sequence[Peer]) -> PeerPolicy:
    """STORE_PEERS plus: the peer regions' replicators may call the ReplicationService, and only it."""
    replicators = frozenset(replicator_identity(p.region) for p in peers)
    return replace(
        STORE_PEERS,
        per_method={
            **STORE_PEERS.per_method,
            **{f"/{REPLICATION_SERVICE_NAME}/{m.name}": replicators for m in REPLICATION_SERVICE.methods},
        },
    )


async def purge_loop(app: StoreApp, interval: float) -> None:
    """Purge secrets whose recovery window ended, now and then every ``interval`` seconds (a failed round is
    logged with its traceback and retried)."""

    async def purge() -> None:
        await app.purge_due()

    await run_forever(purge, name="store.purge", interval=interval, logger=log)


#: The public services the gateway forwards here, and the CloudTrail eventSource of their events.
STORE_AUDIT_SOURCES = {
    SERVICE_NAME: SECRETS_SOURCE,
    AUDIT_SERVICE_NAME: CLOUDTRAIL_SOURCE,
    IAM_SERVICE_NAMES[0]: ACTION_SOURCES["iam"],
    IAM_SERVICE_NAMES[1]: ACTION_SOURCES["sts"],
    IAM_SERVICE_NAMES[2]: ACTION_SOURCES["organizations"],
    USAGE_SERVICE_NAME: ACTION_SOURCES["coffer"],
}


@dataclass
class StoreRuntime:
    server: RunningServer
    app: StoreApp
    rotation: RotationApp
    kms: KmsClient
    pool: asyncpg.Pool
    kms_channel: grpc.aio.Channel
    key_events: KeyEventsFollower
    rotation_requests: NotifyHub
    replication: ReplicationApp
    replicator: Replicator
    housekeeper: Housekeeper
    iam: IamDirectory
    audit_trail: StoreAuditTrail
    access_key_secrets: AccessKeySecrets
    usage_meter: UsageMeter | None = None
    #: Seals the bootstrap keys' secrets once the kms answers (done when the task is).
    bootstrap_sealing: asyncio.Task[None] | None = None
    purge_task: asyncio.Task[None] | None = None
    replicator_task: asyncio.Task[None] | None = None
    housekeeping_task: asyncio.Task[None] | None = None
    #: The elections of the jobs only one store replica runs (None: the loops are off).
    purge_leadership: Leadership | None = None
    housekeeping_leadership: Leadership | None = None
    _closed: bool = field(default=False, repr=False)

    @property
    def port(self) -> int:
        return self.server.port

    async def purge_now(self, now: datetime | None = None) -> list[str]:
        """Run one purge round now (what the background loop does every purge_interval_seconds)."""
        return await self.app.purge_due(now)

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Stop serving gracefully, then the purge loop, the key-change follower, the channel and the pool."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.rotation_requests.aclose()  # ends the watch streams first
            await self.iam.hub.aclose()
            await self.iam.aclose()
            await self.server.stop(grace)
        finally:
            await cancel_and_wait(
                self.purge_task,
                self.replicator_task,
                self.housekeeping_task,
                self.bootstrap_sealing,
                logger=log,
            )
            await self.audit_trail.aclose()
            await self.replicator.aclose()
            await self.key_events.aclose()
            await self.kms_channel.close()
            self.kms.cache.clear()
            if self.usage_meter is not None:
                await self.usage_meter.aclose()  # the last batch of call counts
            await self.pool.close()


async def serve(settings: Settings, *, clock: Clock | None = None) -> StoreRuntime:
    if not settings.database_url:
        raise errors.Unavailable("The store needs PostgreSQL: set COFFER_DATABASE_URL.")
    async with contextlib.AsyncExitStack() as undo:  # unwinds only if start-up fails part-way
        pool = await create_pool(settings.database_url)
        undo.push_async_callback(pool.close)
        applied = await apply_migrations(pool)
        if applied:
            log.info("store.migrated", applied=applied)
        bootstrap_file = settings.bootstrap_keys_file

        def bootstrap_keys() -> list[BootstrapKey]:
            return read_bootstrap_keys(bootstrap_file) if bootstrap_file else []

        await ensure_root_account(pool, bootstrap_keys())
        hub = iam_hub(settings.database_url)
        await hub.start()
        undo.push_async_callback(hub.aclose)
        iam = IamDirectory(pool, hub)
        iam.start()
        undo.push_async_callback(iam.aclose)
        indexed = await StoreRepository(pool).index_missing_terms()
        if indexed:
            log.info("store.list_terms_indexed", secrets=indexed)
        kms_channel = secure_channel(
            settings.kms_addr, TlsFiles.for_identity(settings.pki_dir, "store"), server_name="kms"
        )
        undo.push_async_callback(kms_channel.close)
        kms = KmsClient(
            kms_pb2_grpc.KeyManagementServiceStub(kms_channel),
            cache=DataKeyCache(ttl=settings.data_key_cache_seconds),
        )
        key_events_stub = kms_pb2_grpc.KeyEventsServiceStub(kms_channel)
        key_policies = KeyPolicies(grpc_source(key_events_stub))
        key_events = KeyEventsFollower(key_events_stub, kms.cache, key_policies=key_policies)
        key_events.start()
        undo.push_async_callback(key_events.aclose)
        if not await key_events.wait_following(within=KEY_EVENTS_WAIT_SECONDS):
            log.warning("store.kms_key_events_not_following", kms=settings.kms_addr)
        rotation_requests = rotation_request_hub(settings.database_url)
        await rotation_requests.start()
        undo.push_async_callback(rotation_requests.aclose)
        app = StoreApp(
            repo=StoreRepository(pool),
            kms=kms,
            sealer=ValueSealer(kms, key_policies=key_policies),
            config=StoreConfig(
                partition=settings.partition,
                region=settings.region,
                account=settings.account_id,
                peer_regions=frozenset(p.region for p in settings.peers),
            ),
            clock=clock,
            key_policy=KmsKeyPolicyCheck(key_policies),
        )
        if settings.unsafe_bench_bypass:
            app.authz.bypass = True
            log.warning("store.unsafe_bench_bypass", note="no policy is decided and no event recorded")
        targets = TargetGuard.from_settings(settings)
        rotation = RotationApp(
            repo=StoreRepository(pool),
            store=app,
            config=app.config,
            clock=app.clock,
            policy=RotationPolicy(
                max_tries=settings.rotation_max_tries,
                backoff_base_seconds=settings.rotation_backoff_base_seconds,
                default_lease_seconds=max(1, int(settings.rotation_lease_seconds)),
            ),
            targets=targets,
        )
        replication_repo = ReplicationRepository(pool)
        links = []
        for peer in settings.peers:
            channel = secure_channel(
                peer.endpoint,
                TlsFiles(
                    ca=peer.ca_file,
                    cert=settings.pki_dir / f"{replicator_identity(settings.region)}.crt",
                    key=settings.pki_dir / f"{replicator_identity(settings.region)}.key",
                ),
                server_name="store",
            )
            undo.push_async_callback(channel.close)
            links.append(
                PeerLink(
                    region=peer.region,
                    stub=replication_pb2_grpc.ReplicationServiceStub(channel),
                    channel=channel,
                )
            )
        replicator = Replicator(
            dsn=settings.database_url,
            repo=replication_repo,
            store=app,
            clock=app.clock,
            region=settings.region,
            peers=links,
            interval=settings.replication_interval_seconds,
        )
        replication = ReplicationApp(
            repo=replication_repo, store=app, clock=app.clock, notify_detach=replicator.detach
        )
        audit_trail = StoreAuditTrail(
            pool, load_signing_key(settings.pki_dir / AUDIT_KEY), region=settings.region
        )
        changes_hub = NotifyHub(settings.database_url, CHANGED_CHANNEL, service="store")
        await changes_hub.start()
        undo.push_async_callback(changes_hub.aclose)
        watch = SecretWatch(
            repo=StoreRepository(pool),
            app=app,
            hub=changes_hub,
            clock=app.clock,
            heartbeat_seconds=settings.watch_heartbeat_seconds,
            poll_seconds=settings.watch_poll_seconds,
            resolve_caller=iam.resolve_caller,
        )
        servicer = SecretStoreServicer(app, rotation, replication, watch)
        usage_meter = UsageMeter(pool, app.clock)
        usage = UsageServicer(pool, usage_meter, app.clock)
        control = RotationControlServicer(rotation, rotation_requests)
        receiver = ReplicationServicer(replication)
        access_key_secrets = AccessKeySecrets(kms)
        iam_core = IamCore(IamRepository(pool), secrets=access_key_secrets, clock=app.clock)

        def register(server: grpc.aio.Server) -> list[str]:
            store_pb2_grpc.add_SecretStoreServiceServicer_to_server(servicer, server)
            store_pb2_grpc.add_RotationControlServiceServicer_to_server(control, server)
            replication_pb2_grpc.add_ReplicationServiceServicer_to_server(receiver, server)
            iam_pb2_grpc.add_IdentityManagementServiceServicer_to_server(
                IdentityManagementServicer(iam_core), server
            )
            iam_pb2_grpc.add_SecurityTokenServiceServicer_to_server(SecurityTokenServicer(iam_core), server)
            iam_pb2_grpc.add_OrganizationsServiceServicer_to_server(OrganizationsServicer(iam_core), server)
            usage_pb2_grpc.add_UsageServiceServicer_to_server(usage, server)
            directory_pb2_grpc.add_PrincipalDirectoryServiceServicer_to_server(
                DirectoryServicer(iam, access_key_secrets), server
            )
            audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(audit_trail), server)
            audit_pb2_grpc.add_AuditIngestServiceServicer_to_server(AuditIngestServicer(audit_trail), server)
            return [
                SERVICE_NAME,
                CONTROL_SERVICE_NAME,
                REPLICATION_SERVICE_NAME,
                *IAM_SERVICE_NAMES,
                USAGE_SERVICE_NAME,
                DIRECTORY_SERVICE.full_name,
                AUDIT_SERVICE_NAME,
                AUDIT_INGEST_SERVICE_NAME,
            ]

        server = await start_server(
            service="store",
            bind=settings.store_addr,
            health_bind=settings.health_addr or None,
            metrics_bind=settings.metrics_addr or None,
            tls=TlsFiles.for_identity(settings.pki_dir, "store"),
            register=register,
            peers=store_peers(settings.peers),
            foreign_identities={replicator_identity(p.region): p.ca_file for p in settings.peers},
            assertions=PrincipalVerifier.from_file(settings.pki_dir / SIGNING_PUB, audience="store"),
            audit=MeteringAudit(StructlogAudit(), usage_meter),
            resolve_caller=iam.resolve_caller,
            public_audit=None
            if settings.unsafe_bench_bypass
            else PublicAudit(trail=audit_trail, sources=STORE_AUDIT_SOURCES, region=settings.region),
        )
        targets.add_own(f"{settings.store_addr.rpartition(':')[0]}:{server.port}")  # bound to port 0 in tests
        usage_meter.start()
        undo.push_async_callback(usage_meter.aclose)
        undo.pop_all()
    runtime = StoreRuntime(
        server=server,
        app=app,
        rotation=rotation,
        kms=kms,
        pool=pool,
        kms_channel=kms_channel,
        key_events=key_events,
        rotation_requests=rotation_requests,
        replication=replication,
        replicator=replicator,
        usage_meter=usage_meter,
        housekeeper=Housekeeper(
            StoreRepository(pool),
            app.clock,
            peers=[p.region for p in settings.peers],
            outbox_max_rows=settings.outbox_max_rows,
            outbox_keep_seconds=settings.outbox_keep_seconds,
            attempts_kept=settings.rotation_attempts_kept,
            watch_keep_seconds=settings.watch_keep_seconds,
            watch_max_events=settings.watch_max_events,
        ),
        iam=iam,
        audit_trail=audit_trail,
        access_key_secrets=access_key_secrets,
    )
    audit_trail.start()
    runtime.bootstrap_sealing = asyncio.get_running_loop().create_task(
        keep_sealing_bootstrap_secrets(pool, bootstrap_keys, access_key_secrets),
        name="store-bootstrap-secrets",
    )
    if settings.peers:
        runtime.replicator_task = asyncio.get_running_loop().create_task(
            replicator.run(), name="store-replicator"
        )
    if settings.purge_interval_seconds > 0:
        # Each runs on one store replica at a time (coffer.leader); the others stand by.
        interval = settings.purge_interval_seconds
        runtime.purge_leadership = Leadership(settings.database_url, "store.purge")
        runtime.housekeeping_leadership = Leadership(settings.database_url, "store.housekeeping")
        runtime.purge_task = asyncio.get_running_loop().create_task(
            runtime.purge_leadership.run(lambda: purge_loop(app, interval)), name="store-purge"
        )
        runtime.housekeeping_task = asyncio.get_running_loop().create_task(
            runtime.housekeeping_leadership.run(lambda: runtime.housekeeper.run(interval)),
            name="store-housekeeping",
        )
    log.info(
        "store.ready",
        port=server.port,
        kms=settings.kms_addr,
        region=settings.region,
        peers=[p.region for p in settings.peers],
    )
    return runtime


def main() -> None:
    service_main("store", serve)


if __name__ == "__main__":
    main()

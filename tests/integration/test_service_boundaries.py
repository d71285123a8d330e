"""Services meet only through their APIs: each data service has its own database role with rights on its own
schema only, each process gets only the settings it uses, the store's data-key cache follows the kms over a
gRPC stream (so kms and store may use different databases), and RotateSecret wakes the scheduler over a gRPC
stream (the rotation service has no database access)."""

from __future__ import annotations

import asyncio
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from coffer import dbroles
from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.api.store.v1 import store_pb2, store_pb2_grpc
from coffer.client.aio import AsyncCofferClient
from coffer.client.credentials import Credentials
from coffer.crypto.rootkey import RootKey
from coffer.devrun import Deployment
from coffer.embedded import EmbeddedPostgres, free_port
from coffer.pgnotify import RESET, Notice, Subscription
from coffer.rpc.channel import secure_channel
from coffer.rpc.tls import TlsFiles, channel_credentials, name_options, service_host
from coffer.settings import Settings, service_env
from coffer.testing.stack import ServiceStack, fresh_database, provisioned_stack


@pytest.fixture
async def services(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[ServiceStack]:
    stack = await provisioned_stack(home=tmp_path, pki_dir=pki_dir, database_url=database_url)
    try:
        yield stack
    finally:
        await stack.aclose()


@pytest.fixture
async def second_database(pg_server: EmbeddedPostgres) -> AsyncIterator[str]:
    async with fresh_database(pg_server) as url:
        yield url


def _store_as_gateway(
    port: int, pki_dir: Path
) -> tuple[grpc.aio.Channel, store_pb2_grpc.SecretStoreServiceStub]:
    channel = secure_channel(
        f"127.0.0.1:{port}", TlsFiles.for_identity(pki_dir, "gateway"), server_name="store"
    )
    return channel, store_pb2_grpc.SecretStoreServiceStub(channel)


async def _fetch_as(dsn: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query)
        return rows
    finally:
        await conn.close()


async def test_each_service_role_reads_its_own_tables_only(services: ServiceStack, pki_dir: Path) -> None:
    await services.start_kms()
    store = await services.start_store()
    channel, stub = _store_as_gateway(store.port, pki_dir)
    async with channel:
        await stub.CreateSecret(
            pb.CreateSecretRequest(name="boundary", client_request_token=str(uuid.uuid4()), secret_string="v")
        )
    kms_dsn, store_dsn = services.dsns["kms"], services.dsns["store"]
    # each role sees its own tables...
    assert len(await _fetch_as(store_dsn, "SELECT name FROM store.secrets")) == 1
    assert await _fetch_as(kms_dsn, "SELECT key_id FROM kms.key_materials")
    # ... and is refused the other's: the kms cannot read secrets, the store cannot read key material
    for query in ("SELECT * FROM store.secrets", "SELECT * FROM store.versions"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _fetch_as(kms_dsn, query)
    for query in ("SELECT * FROM kms.key_materials", "SELECT * FROM kms.keys"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _fetch_as(store_dsn, query)
    # neither may create objects in schema public either
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _fetch_as(store_dsn, "CREATE TABLE public.sneaky (x int)")


async def test_role_passwords_are_kept_for_the_next_run(database_url: str, tmp_path: Path) -> None:
    passwords_file = tmp_path / "home" / "db-roles.json"
    first = await dbroles.ensure_roles(database_url, passwords_file)
    assert stat.S_IMODE(passwords_file.stat().st_mode) == 0o600
    second = await dbroles.ensure_roles(database_url, passwords_file)
    assert first == second  # the same passwords: a second `make run` logs in as before
    for dsn in second.values():
        assert await _fetch_as(dsn, "SELECT 1")
    assert set(dbroles.read_passwords(passwords_file)) == {"kms", "store"}


async def test_a_role_cannot_connect_to_another_deployments_database(
    database_url: str, second_database: str
) -> None:
    ours = await dbroles.provision(database_url)
    await dbroles.provision(second_database)
    ours_store = dbroles.role_name(dbroles.database_of(database_url), "store")
    stranger = dbroles.dsn_for(second_database, user=ours_store, password=ours.passwords["store"])
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _fetch_as(stranger, "SELECT 1")


def test_each_process_gets_only_the_settings_it_uses(tmp_path: Path) -> None:
    everything = {
        "PATH": "/usr/bin",
        "COFFER_HOME": str(tmp_path),
        "COFFER_DATABASE_URL": "postgresql://admin:secret@db/coffer",
        "COFFER_REDIS_URL": "redis://:secret@redis:6379/0",
        "COFFER_ROTATION_SECRET_ACCESS_KEY": "secret",
        "COFFER_ROOT_KEY_FILE": str(tmp_path / "root.key"),
    }
    gateway = service_env("gateway", everything)
    assert "COFFER_DATABASE_URL" not in gateway and "COFFER_REDIS_URL" not in gateway
    assert "COFFER_ROOT_KEY_FILE" not in gateway and "COFFER_ROTATION_SECRET_ACCESS_KEY" not in gateway
    assert gateway["PATH"] == "/usr/bin" and gateway["COFFER_HOME"] == str(tmp_path)
    rotation = service_env("rotation", everything)
    assert "COFFER_DATABASE_URL" not in rotation and rotation["COFFER_REDIS_URL"]
    kms = service_env("kms", everything)
    assert "COFFER_REDIS_URL" not in kms and kms["COFFER_DATABASE_URL"]
    assert "COFFER_REDIS_URL" not in service_env("store", everything)

    # `make run` spawns each process with exactly that, and the data services with their own role's URL
    deployment = Deployment(Settings.from_env(everything), base_env=everything)
    deployment.database_url = everything["COFFER_DATABASE_URL"]
    deployment.redis_url = everything["COFFER_REDIS_URL"]
    deployment.service_dsns = {"kms": "postgresql://k:pw@db/coffer", "store": "postgresql://s:pw@db/coffer"}
    spawned = {name: deployment.service_env(name) for name in ("gateway", "kms", "store", "rotation")}
    assert "COFFER_DATABASE_URL" not in spawned["rotation"]
    assert "COFFER_DATABASE_URL" not in spawned["gateway"] and "COFFER_REDIS_URL" not in spawned["gateway"]
    assert "COFFER_REDIS_URL" not in spawned["kms"]
    assert spawned["kms"]["COFFER_DATABASE_URL"] == "postgresql://k:pw@db/coffer"
    assert spawned["store"]["COFFER_DATABASE_URL"] == "postgresql://s:pw@db/coffer"
    assert deployment.rotation_credentials is None  # prepare() was not run: nothing to hand over
    assert "COFFER_ROTATION_SECRET_ACCESS_KEY" not in spawned["store"]
    deployment.rotation_credentials = Credentials("AKIA" + "R" * 16, "rotation-secret")
    rotation = deployment.service_env("rotation")
    assert rotation["COFFER_ROTATION_ACCESS_KEY_ID"] == "AKIA" + "R" * 16
    assert rotation["COFFER_ROTATION_SECRET_ACCESS_KEY"] == "rotation-secret"
    assert "COFFER_ROTATION_SESSION_TOKEN" not in rotation
    assert not any("rotation-secret" in v for v in deployment.service_env("store").values())


async def test_the_data_key_cache_follows_the_kms_across_databases(
    tmp_path: Path, pki_dir: Path, database_url: str, second_database: str
) -> None:
    """kms and store on different databases: the store still evicts at once, over the gRPC stream."""
    stack = await provisioned_stack(home=tmp_path, pki_dir=pki_dir)
    stack.dsns = {
        "kms": (await dbroles.provision(database_url, services=("kms",))).dsns["kms"],
        "store": (await dbroles.provision(second_database, services=("store",))).dsns["store"],
    }
    try:
        kms_runtime = await stack.start_kms()
        store = await stack.start_store()
        channel = secure_channel(
            f"127.0.0.1:{kms_runtime.port}", TlsFiles.for_identity(pki_dir, "store"), server_name="kms"
        )
        store_channel, secrets = _store_as_gateway(store.port, pki_dir)
        try:
            kms = kms_pb2_grpc.KeyManagementServiceStub(channel)
            key_arn = (await kms.CreateKey(kms_pb2.CreateKeyRequest())).key_metadata.arn
            await secrets.CreateSecret(
                pb.CreateSecretRequest(
                    name="far", client_request_token=str(uuid.uuid4()), secret_string="v", kms_key_id=key_arn
                )
            )
            await secrets.GetSecretValue(pb.GetSecretValueRequest(secret_id="far"))
            assert store.kms.cache.holds(key_arn)
            assert await _fetch_as(database_url, "SELECT 1 FROM pg_tables WHERE schemaname = 'store'") == []
            await kms.DisableKey(kms_pb2.DisableKeyRequest(key_id=key_arn))
            for _ in range(200):
                if not store.kms.cache.holds(key_arn):
                    break
                await asyncio.sleep(0.01)
            assert not store.kms.cache.holds(key_arn)
        finally:
            await store_channel.close()
            await channel.close()
    finally:
        await stack.aclose()


async def test_only_their_consumers_may_watch(services: ServiceStack, pki_dir: Path) -> None:
    kms_runtime = await services.start_kms()
    store = await services.start_store()

    def raw(port: int, identity: str, server: str) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(TlsFiles.for_identity(pki_dir, identity)),
            options=name_options(service_host(server)),
        )

    for identity in ("gateway", "rotation"):
        async with raw(kms_runtime.port, identity, "kms") as channel:
            call = kms_pb2_grpc.KeyEventsServiceStub(channel).WatchKeyChanges(
                kms_pb2.WatchKeyChangesRequest()
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with raw(kms_runtime.port, "store", "kms") as channel:
        call = kms_pb2_grpc.KeyEventsServiceStub(channel).WatchKeyChanges(kms_pb2.WatchKeyChangesRequest())
        assert (await call.read()).reset  # the store is let in: the stream opens with a reset
        call.cancel()
    async with raw(store.port, "gateway", "store") as channel:
        stub = store_pb2_grpc.RotationControlServiceStub(channel)
        call = stub.WatchRotationRequests(store_pb2.WatchRotationRequestsRequest())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_rotate_secret_wakes_a_scheduler_without_database_access(
    tmp_path: Path, pki_dir: Path, database_url: str, redis_url: str
) -> None:
    stack = await provisioned_stack(
        home=tmp_path,
        pki_dir=pki_dir,
        database_url=database_url,
        COFFER_REDIS_URL=redis_url,
        # Polling every ten minutes: only the store's wake-up stream can start this rotation in time.
        COFFER_ROTATION_POLL_SECONDS="600",
        COFFER_ROTATION_STREAM_PREFIX=f"test:{uuid.uuid4().hex[:8]}",
    )
    client: AsyncCofferClient | None = None
    try:
        await stack.start_kms()
        await stack.start_store()
        admin = await stack.credential("user/admin")
        await stack.rotation_credentials()
        gateway = await stack.start_gateway()
        assert stack.settings("rotation").database_url == ""
        await stack.start_rotation()
        client = AsyncCofferClient(f"127.0.0.1:{gateway.port}", stack.ca_file, admin)
        await asyncio.sleep(0.5)  # the start-up pass is over: from here on only a wake-up claims work
        await client.create_secret(name="app/woken", secret_string="v0")
        reply = await client.call("RotateSecret", secret_id="app/woken", rotation_lambda_arn="random-value")
        assert isinstance(reply, pb.RotateSecretResponse)
        token = reply.version_id
        for _ in range(150):
            current = await client.get_secret_value(secret_id="app/woken")
            if current.version_id == token:
                break
            await asyncio.sleep(0.1)
        assert (await client.get_secret_value(secret_id="app/woken")).version_id == token
    finally:
        if client is not None:
            await client.close()
        await stack.aclose()


def test_a_subscriber_that_falls_behind_gets_one_reset() -> None:
    sub = Subscription(limit=3)
    for arn in ("a", "b", "c"):
        sub.push(Notice(arn))
    sub.push(Notice("d"))  # one too many: what it missed is summed up by a reset
    assert sub.pending() == [RESET]
    sub.push(Notice("e"))
    assert sub.pending() == [Notice("e")]


async def test_the_store_drops_its_cache_when_the_key_stream_comes_back(
    tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    """While the kms is away the cached data keys still serve reads; when the stream reopens (changes may
    have been missed meanwhile) every one of them is dropped."""
    stack = await provisioned_stack(
        home=tmp_path, pki_dir=pki_dir, database_url=database_url, COFFER_KMS_ADDR=f"127.0.0.1:{free_port()}"
    )
    root_key = RootKey.generate()
    try:
        kms_runtime = await stack.start_kms(root_key=root_key)
        store = await stack.start_store()
        await stack.bootstrap_sealed()  # the admin key's secret: a data key of the AWS managed key, cached
        channel, secrets = _store_as_gateway(store.port, pki_dir)
        async with channel:
            before = len(store.kms.cache)
            await secrets.CreateSecret(
                pb.CreateSecretRequest(name="kept", client_request_token=str(uuid.uuid4()), secret_string="v")
            )
            assert len(store.kms.cache) == before + 1
            await kms_runtime.aclose()
            for _ in range(200):
                if not store.key_events.following:
                    break
                await asyncio.sleep(0.01)
            assert not store.key_events.following
            assert (
                await secrets.GetSecretValue(pb.GetSecretValueRequest(secret_id="kept"))
            ).secret_string == "v"
            assert len(store.kms.cache) == before + 1
            await stack.start_kms(root_key=root_key)  # the same address
            assert await store.key_events.wait_following(within=15.0)
            assert len(store.kms.cache) == 0
            assert (
                await secrets.GetSecretValue(pb.GetSecretValueRequest(secret_id="kept"))
            ).secret_string == "v"
    finally:
        await stack.aclose()

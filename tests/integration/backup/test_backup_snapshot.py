"""``coffer.backup.snapshot`` on a real PostgreSQL: a database migrated as the services do, with rows, is
dumped and restored into another one; the rows, the owners (each service's role, so the privilege separation
of ``coffer.dbroles`` holds after a restore) and the sequences come back, the watch stream gets a new epoch;
a second restore is refused unless forced, a forced one replaces what is there; a login that is not a
superuser, and a database the services are connected to, are refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import asyncpg
import pytest

from coffer import dbroles
from coffer.backup import BackupError
from coffer.backup.manifest import Manifest, digest_files
from coffer.backup.snapshot import dump, migration_sets, restore
from coffer.embedded import EmbeddedPostgres
from coffer.migrations import apply_migrations
from coffer.testing.stack import fresh_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def migrate_like_the_services(url: str) -> dict[str, str]:
    provisioned = await dbroles.provision(url)
    for service, schema in dbroles.SCHEMAS.items():
        pool = await asyncpg.create_pool(provisioned.dsns[service], min_size=1, max_size=1)
        try:
            await apply_migrations(pool, migration_sets()[schema])
        finally:
            await pool.close()
    return dict(provisioned.passwords)


async def add_events(url: str, count: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        for i in range(count):
            await conn.execute(
                "INSERT INTO store.secret_events (secret_id, account_id, arn, name, kind, event_time)"
                " VALUES ($1, '000000000000', $2, $3, 'created', now())",
                i + 1,
                f"arn:aws:secretsmanager:local-1:000000000000:secret:s{i}-abcdef",
                f"s{i}",
            )
    finally:
        await conn.close()


async def rows_of(url: str, query: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(query)]
    finally:
        await conn.close()


async def backed_up(url: str, directory: Path) -> Manifest:
    dumped = await dump(url, directory, region="local-1", coffer_version="test")
    return dataclasses.replace(dumped.manifest, files=digest_files(directory, dumped.data_files))


EVENTS = "SELECT position, secret_id, name, kind FROM store.secret_events ORDER BY position"
OWNERS = "SELECT schemaname, tablename, tableowner FROM pg_tables WHERE schemaname IN ('kms', 'store')"


async def test_dump_and_restore_into_another_database(pg_server: EmbeddedPostgres, tmp_path: Path) -> None:
    async with fresh_database(pg_server) as source, fresh_database(pg_server) as target:
        await migrate_like_the_services(source)
        await add_events(source, 3)
        manifest = await backed_up(source, tmp_path)
        assert manifest.row_counts()["store.secret_events"] == 3
        assert set(manifest.migrations) == {"kms", "store"}

        done = await restore(
            target, tmp_path, manifest, passwords={}, keep_unknown_passwords=False, force=False
        )
        assert done.rows == manifest.row_counts() and set(done.passwords) == {"kms", "store"}
        assert await rows_of(target, EVENTS) == await rows_of(source, EVENTS)
        # every table belongs to its service's role, as when the services make them
        database = dbroles.database_of(target)
        for schema, _table, owner in await rows_of(target, OWNERS):
            assert owner == dbroles.role_name(database, str(schema))
        # the sequences go on after the restored rows; the change stream has a new epoch
        await add_events(target, 1)
        assert [r[0] for r in await rows_of(target, EVENTS)] == [1, 2, 3, 4]
        epoch = "SELECT epoch FROM store.secret_events_state"
        assert await rows_of(target, epoch) != await rows_of(source, epoch)

        with pytest.raises(BackupError, match="is not empty") as refused:
            await restore(
                target,
                tmp_path,
                manifest,
                passwords=done.passwords,
                keep_unknown_passwords=False,
                force=False,
            )
        assert "--force" in refused.value.message
        await restore(
            target, tmp_path, manifest, passwords=done.passwords, keep_unknown_passwords=False, force=True
        )
        assert await rows_of(target, EVENTS) == await rows_of(source, EVENTS)
        # the roles kept the passwords they were given: the store's role still logs in with its own
        store_dsn = dbroles.dsn_for(
            target, user=dbroles.role_name(database, "store"), password=done.passwords["store"]
        )
        assert len(await rows_of(store_dsn, EVENTS)) == 3


async def test_restore_refuses_a_non_superuser_and_connected_services(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    async with fresh_database(pg_server) as source, fresh_database(pg_server) as target:
        passwords = await migrate_like_the_services(source)
        manifest = await backed_up(source, tmp_path)
        kms_dsn = dbroles.dsn_for(
            source, user=dbroles.role_name(dbroles.database_of(source), "kms"), password=passwords["kms"]
        )
        with pytest.raises(BackupError, match="needs a PostgreSQL superuser"):
            await restore(kms_dsn, tmp_path, manifest, passwords={}, keep_unknown_passwords=True, force=True)
        with pytest.raises(BackupError, match="PostgreSQL refused to let this login read every table"):
            await dump(kms_dsn, tmp_path / "as-kms", region="local-1", coffer_version="test")

        done = await restore(
            target, tmp_path, manifest, passwords={}, keep_unknown_passwords=False, force=False
        )
        database = dbroles.database_of(target)
        service = await asyncpg.connect(
            dbroles.dsn_for(
                target, user=dbroles.role_name(database, "store"), password=done.passwords["store"]
            )
        )
        try:
            with pytest.raises(BackupError, match="the services are still connected"):
                await restore(
                    target,
                    tmp_path,
                    manifest,
                    passwords=done.passwords,
                    keep_unknown_passwords=False,
                    force=True,
                )
        finally:
            await service.close()


async def test_dump_refuses_a_database_without_coffer(pg_server: EmbeddedPostgres, tmp_path: Path) -> None:
    async with fresh_database(pg_server) as empty:
        with pytest.raises(BackupError, match="has no 'kms' schema"):
            await dump(empty, tmp_path, region="local-1", coffer_version="test")

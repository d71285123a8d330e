"""coffer/migrations.py: the one migration runner (store and kms use it) against a real PostgreSQL: applies
pending files in order in one transaction, is idempotent, tolerates concurrent starts, rolls back a failing
file entirely, and needs no superuser (a role that owns its schema is enough)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from coffer.kms.keystore import MIGRATIONS as KMS_MIGRATIONS
from coffer.migrations import MigrationSet, apply_migrations
from coffer.store.sql.migrations import MIGRATIONS as STORE_MIGRATIONS

pytestmark = pytest.mark.integration


def _write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql, encoding="utf-8")


async def test_applies_pending_files_once_in_order(database_url: str, tmp_path: Path) -> None:
    _write(tmp_path, "0001_a.sql", "CREATE TABLE app.a (x int);")
    _write(tmp_path, "0002_b.sql", "INSERT INTO app.a VALUES (1);")
    _write(tmp_path, "notes.sql", "this is not a migration")
    mset = MigrationSet(schema="app", directory=tmp_path, lock_id=4242)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        assert await apply_migrations(pool, mset) == ["0001_a.sql", "0002_b.sql"]
        assert await apply_migrations(pool, mset) == []
        _write(tmp_path, "0003_c.sql", "INSERT INTO app.a VALUES (2);")
        assert await apply_migrations(pool, mset) == ["0003_c.sql"]
        assert await pool.fetchval("SELECT sum(x) FROM app.a") == 3
        names = [r[0] for r in await pool.fetch("SELECT name FROM app.schema_migrations ORDER BY name")]
        assert names == ["0001_a.sql", "0002_b.sql", "0003_c.sql"]
    finally:
        await pool.close()


async def test_concurrent_starts_apply_once_and_a_failure_applies_nothing(
    database_url: str, tmp_path: Path
) -> None:
    _write(tmp_path, "0001_a.sql", "CREATE TABLE app.a (x int);")
    mset = MigrationSet(schema="app", directory=tmp_path, lock_id=4243)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        results = await asyncio.gather(*(apply_migrations(pool, mset) for _ in range(3)))
        assert sorted(results) == [[], [], ["0001_a.sql"]]
        _write(tmp_path, "0002_b.sql", "CREATE TABLE app.b (x int);")
        _write(tmp_path, "0003_bad.sql", "CREATE TABLE app.c (x no_such_type);")
        with pytest.raises(asyncpg.PostgresError):
            await apply_migrations(pool, mset)
        assert await pool.fetchval("SELECT to_regclass('app.b')") is None  # one transaction: 0002 rolled back
        assert await pool.fetchval("SELECT count(*) FROM app.schema_migrations") == 1
    finally:
        await pool.close()


async def test_store_and_kms_migrate_as_roles_owning_only_their_schema(database_url: str) -> None:
    """Neither role is a superuser or may create a schema (PUBLIC has no CREATE on a database); each owns
    its own schema, created beforehand by an administrator."""
    suffix = uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(database_url)
    roles = {"store": f"store_{suffix}", "kms": f"kms_{suffix}"}
    try:
        for schema, role in roles.items():
            await admin.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
            await admin.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
        for schema, mset in (("store", STORE_MIGRATIONS), ("kms", KMS_MIGRATIONS)):
            url = database_url.replace("postgres:@", f"{roles[schema]}:@", 1)
            pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
            try:
                applied = await apply_migrations(pool, mset)
                assert applied and applied == [mset.key(p) for p in mset.files()]
                assert await apply_migrations(pool, mset) == []
                owner = await pool.fetchval(
                    "SELECT tableowner FROM pg_tables"
                    " WHERE schemaname = $1 AND tablename = 'schema_migrations'",
                    schema,
                )
                assert owner == roles[schema]
            finally:
                await pool.close()
    finally:
        await admin.close()

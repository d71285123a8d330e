"""The one schema-migration runner every service with a database uses.

A service keeps its migrations as ``NNNN_*.sql`` files in one directory, all of them about its own schema.
:func:`apply_migrations` applies those not applied yet, in file-name order, and records each one in
``<schema>.schema_migrations``, all in ONE transaction under a transaction-scoped advisory lock (several
processes may start at once; the loser waits, then finds nothing to do). Nothing is left on the pooled
connection afterwards. It needs no superuser: the role that owns the schema is enough (the schema is created
only when it does not exist yet, which needs the CREATE right on the database).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class MigrationSet:
    #: The service's schema; the files create their objects in it by qualified name.
    schema: str
    directory: Path
    #: pg_advisory_xact_lock key, one per service.
    lock_id: int
    #: The column of ``<schema>.schema_migrations`` naming an applied file, and whether it holds the file's
    #: name (``0001_x.sql``) or its stem (``0001_x``): each service keeps the bookkeeping it always had.
    column: str = "name"
    with_suffix: bool = True

    def __post_init__(self) -> None:
        for ident in (self.schema, self.column):
            if not _IDENTIFIER.match(ident):
                raise ValueError(f"not a plain SQL identifier: {ident!r}")

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))

    def key(self, path: Path) -> str:
        return path.name if self.with_suffix else path.stem


async def apply_migrations(pool: asyncpg.Pool, migrations: MigrationSet) -> list[str]:
    """Apply the pending migrations of ``migrations``; returns the names (as recorded) applied now."""
    schema, column = migrations.schema, migrations.column
    applied_now: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", migrations.lock_id)
        exists = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema)
        if not exists:
            await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
            f" {column} text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in await conn.fetch(f"SELECT {column} FROM {schema}.schema_migrations")}
        for path in migrations.files():
            key = migrations.key(path)
            if key in done:
                continue
            await conn.execute(path.read_text(encoding="utf-8"))
            await conn.execute(f"INSERT INTO {schema}.schema_migrations ({column}) VALUES ($1)", key)
            applied_now.append(key)
    return applied_now

"""Dump and restore of one deployment's database (the ``kms`` and ``store`` schemas), through asyncpg.

**Dump.** One connection, one ``REPEATABLE READ READ ONLY`` transaction: every table of both schemas is read
from the same snapshot (the kms's key material and the store's versions wrapped under it, the audit chain
and its head agree), with ``COPY ... TO STDOUT`` in PostgreSQL's text format into gzip files. Generated
columns are left out (PostgreSQL computes them again). Each schema's ``schema_migrations`` gives the schema
version. Sequences are read last; their values are not transactional, so they may be ahead of the rows
(a gap in ids, never a reused one).

**Restore.** Into a database without Coffer's schemas (``force`` drops them first): the roles and schemas
made by :func:`coffer.dbroles.provision`, the tables by applying exactly the migrations the backup had,
as each service's own role (so every object belongs to it, as when the services make them); then, in one
transaction as the administrator, with triggers and foreign-key checks off (``session_replication_role =
replica``, as ``pg_restore --disable-triggers``), the seed rows the migrations wrote are emptied, every
table's rows are copied back and counted against the manifest, and the sequences are set. A failure leaves
the transaction rolled back. The services apply any newer migrations when they start.

Nothing here ever decrypts a value: the rows hold only what the database holds (ciphertext, wrapped keys,
HMACs).
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from coffer import dbroles
from coffer.backup import BackupError
from coffer.backup.manifest import DATA_DIR, Manifest, SequenceState, TableDump, safe_relative
from coffer.migrations import MigrationSet, apply_migrations

_COPY_COUNT = re.compile(r"^COPY (\d+)$")


def migration_sets() -> dict[str, MigrationSet]:
    """Each data service's schema and migrations (the services' own definitions)."""
    from coffer.kms.keystore import MIGRATIONS as KMS_MIGRATIONS
    from coffer.store.sql.migrations import MIGRATIONS as STORE_MIGRATIONS

    return {KMS_MIGRATIONS.schema: KMS_MIGRATIONS, STORE_MIGRATIONS.schema: STORE_MIGRATIONS}


def known_migrations(sets: Mapping[str, MigrationSet]) -> dict[str, list[str]]:
    return {schema: [mset.key(path) for path in mset.files()] for schema, mset in sets.items()}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def _copied(status: str) -> int:
    match = _COPY_COUNT.match(status.strip())
    if match is None:
        raise BackupError(f"PostgreSQL answered {status!r} to COPY")
    return int(match.group(1))


async def _tables(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname <> 'schema_migrations'"
        " ORDER BY c.relname",
        schema,
    )
    return [str(r["relname"]) for r in rows]


async def _columns(conn: asyncpg.Connection, schema: str, table: str) -> tuple[str, ...]:
    rows = await conn.fetch(
        "SELECT a.attname FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''"
        " ORDER BY a.attnum",
        qualified(schema, table),
    )
    return tuple(str(r["attname"]) for r in rows)


async def _sequences(conn: asyncpg.Connection, schema: str) -> list[SequenceState]:
    names = await conn.fetch(
        "SELECT sequencename FROM pg_sequences WHERE schemaname = $1 ORDER BY sequencename", schema
    )
    out = []
    for row in names:
        name = str(row["sequencename"])
        state = await conn.fetchrow(f"SELECT last_value, is_called FROM {qualified(schema, name)}")
        assert state is not None
        out.append(SequenceState(schema, name, int(state["last_value"]), bool(state["is_called"])))
    return out


async def _seal_mode(conn: asyncpg.Connection) -> str:
    if await conn.fetchval("SELECT to_regclass('kms.seal') IS NOT NULL") and await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM kms.seal)"
    ):
        return "shamir"
    if await conn.fetchval("SELECT to_regclass('kms.hsm_root') IS NOT NULL") and await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM kms.hsm_root)"
    ):
        return "pkcs11"
    return "file"


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        raise BackupError(f"the database {dbroles.database_of(url)!r} does not exist") from None
    except (OSError, asyncpg.PostgresError) as exc:
        raise BackupError(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Dumped:
    """What :func:`dump` read: the manifest without files or root keys (the caller adds those)."""

    manifest: Manifest
    data_files: list[str]


async def dump(
    url: str,
    directory: Path,
    *,
    region: str,
    coffer_version: str,
    sets: Mapping[str, MigrationSet] | None = None,
    echo: Callable[[str], None] = lambda _line: None,
    now: dt.datetime | None = None,
) -> Dumped:
    """Write every table of the data services' schemas to ``directory/data`` from one snapshot."""
    sets = dict(sets or migration_sets())
    conn = await _connect(url)
    data_dir = directory / DATA_DIR
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tables: list[TableDump] = []
    sequences: list[SequenceState] = []
    migrations: dict[str, tuple[str, ...]] = {}
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            created_at = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
            server_version = str(await conn.fetchval("SHOW server_version"))
            for schema, mset in sorted(sets.items()):
                if not await conn.fetchval(
                    "SELECT to_regclass($1) IS NOT NULL", f"{schema}.schema_migrations"
                ):
                    raise BackupError(
                        f"the database {dbroles.database_of(url)!r} has no {schema!r} schema (or no "
                        "migrations in it): is it a Coffer deployment's database, and have its services "
                        "started once?"
                    )
                applied = await conn.fetch(
                    f"SELECT {quote_ident(mset.column)} AS key FROM {qualified(schema, 'schema_migrations')}"
                )
                known = [mset.key(path) for path in mset.files()]
                order = {key: i for i, key in enumerate(known)}
                migrations[schema] = tuple(
                    sorted((str(r["key"]) for r in applied), key=lambda k: (order.get(k, len(order)), k))
                )
                for table in await _tables(conn, schema):
                    columns = await _columns(conn, schema, table)
                    relative = f"{DATA_DIR}/{schema}.{table}.copy.gz"
                    target = directory / safe_relative(relative)
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with (
                        os.fdopen(fd, "wb") as raw,
                        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as out,
                    ):

                        async def write(chunk: bytes, out: gzip.GzipFile = out) -> None:
                            out.write(chunk)

                        status = await conn.copy_from_table(
                            table, schema_name=schema, columns=list(columns), output=write, format="text"
                        )
                    rows = _copied(status)
                    tables.append(TableDump(schema, table, columns, rows, relative))
                    echo(f"  {schema}.{table}: {rows} row(s)")
            seal_mode = await _seal_mode(conn)
            root_key_ids: tuple[str, ...] = ()
            if await conn.fetchval("SELECT to_regclass('kms.key_materials') IS NOT NULL"):
                rows_ids = await conn.fetch("SELECT DISTINCT root_key_id FROM kms.key_materials ORDER BY 1")
                root_key_ids = tuple(str(r["root_key_id"]) for r in rows_ids)
            for schema in sorted(sets):
                sequences.extend(await _sequences(conn, schema))
    except asyncpg.InsufficientPrivilegeError as exc:
        raise BackupError(
            f"PostgreSQL refused to let this login read every table ({exc}): back up as a role that may read "
            "both the kms and the store schema (the administrator, e.g. COFFER_ADMIN_DATABASE_URL)"
        ) from None
    finally:
        await conn.close()
    manifest = Manifest(
        created_at=created_at,
        region=region,
        database=dbroles.database_of(url),
        server_version=server_version,
        coffer_version=coffer_version,
        seal_mode=seal_mode,
        root_key_ids=root_key_ids,
        migrations=migrations,
        tables=tuple(tables),
        sequences=tuple(sequences),
    )
    return Dumped(manifest=manifest, data_files=[t.file for t in tables])


async def coffer_tables(conn: asyncpg.Connection, schemas: tuple[str, ...]) -> dict[str, int]:
    """The tables of ``schemas`` that exist, with their row counts."""
    out: dict[str, int] = {}
    for schema in schemas:
        for table in await _tables(conn, schema):
            out[f"{schema}.{table}"] = int(
                await conn.fetchval(f"SELECT count(*) FROM {qualified(schema, table)}")
            )
    return out


async def _ensure_database(url: str) -> None:
    """Create the database ``url`` names when it does not exist (connecting to ``postgres`` on the server)."""
    from coffer.devrun.config import with_database

    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        name = dbroles.database_of(url)
        admin = await _connect(with_database(url, "postgres"))
        try:
            await admin.execute(f"CREATE DATABASE {quote_ident(name)}")
        finally:
            await admin.close()
        return
    except (OSError, asyncpg.PostgresError) as exc:
        raise BackupError(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from None
    await conn.close()


async def _apply_backup_migrations(url: str, role: str, mset: MigrationSet, applied: tuple[str, ...]) -> None:
    """Apply exactly the migrations ``applied`` of ``mset`` (the backup's schema version), logged in as the
    administrator acting as ``role`` (``SET ROLE``), so every object they make belongs to the service's
    role, as when the service applies them itself."""
    by_key = {mset.key(path): path for path in mset.files()}

    async def as_role(conn: asyncpg.Connection) -> None:
        await conn.execute(f"SET ROLE {quote_ident(role)}")

    with tempfile.TemporaryDirectory(prefix="coffer-restore-") as tmp:
        for key in applied:
            source = by_key[key]
            (Path(tmp) / source.name).symlink_to(source)
        subset = MigrationSet(
            schema=mset.schema,
            directory=Path(tmp),
            lock_id=mset.lock_id,
            column=mset.column,
            with_suffix=mset.with_suffix,
        )
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1, init=as_role)
        try:
            await apply_migrations(pool, subset)
        finally:
            await pool.close()


@dataclass(frozen=True, slots=True)
class Restored:
    rows: dict[str, int]
    passwords: dict[str, str]


async def restore(
    url: str,
    directory: Path,
    manifest: Manifest,
    *,
    passwords: Mapping[str, str],
    keep_unknown_passwords: bool,
    force: bool,
    sets: Mapping[str, MigrationSet] | None = None,
    echo: Callable[[str], None] = lambda _line: None,
) -> Restored:
    """Load ``manifest``'s backup (already verified) into the database ``url`` names (see the module doc)."""
    sets = dict(sets or migration_sets())
    schemas = tuple(sorted(sets))
    await _ensure_database(url)
    conn = await _connect(url)
    try:
        if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            raise BackupError(
                "restore needs a PostgreSQL superuser login (it loads rows with triggers and foreign-key "
                "checks off, as pg_restore --disable-triggers does): give the administrator's URL"
            )
        database = dbroles.database_of(url)
        roles = [dbroles.role_name(database, service) for service in dbroles.SCHEMAS]
        connected = int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = ANY($2::text[])",
                database,
                roles,
            )
        )
        if connected:
            raise BackupError(
                f"the services are still connected to {database!r} ({connected} connection(s) of "
                f"{' and '.join(roles)}): stop them first (`make stop`, or scale them to zero), then restore"
            )
        existing = await coffer_tables(conn, schemas)
        if existing:
            held = sum(existing.values())
            if not force:
                raise BackupError(
                    f"the database {dbroles.database_of(url)!r} is not empty: it holds Coffer's schemas "
                    f"({len(existing)} tables, {held} rows). Restore into an empty database (drop and "
                    "create it), or give --force to replace what it holds"
                )
            echo(f"--force: dropping the schemas {', '.join(schemas)} ({held} rows)")
            for schema in schemas:
                await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()

    provisioned = await dbroles.provision(
        url, passwords=passwords, services=tuple(dbroles.SCHEMAS), keep_unknown=keep_unknown_passwords
    )
    database = dbroles.database_of(url)
    for schema, mset in sorted(sets.items()):
        service = next(s for s, owned in dbroles.SCHEMAS.items() if owned == schema)
        await _apply_backup_migrations(
            url, dbroles.role_name(database, service), mset, manifest.migrations[schema]
        )
        echo(f"  schema {schema}: {len(manifest.migrations[schema])} migration(s) applied")

    conn = await _connect(url)
    rows: dict[str, int] = {}
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            present = {f"{s}.{t}" for s in schemas for t in await _tables(conn, s)}
            expected = {t.qualified for t in manifest.tables}
            if present != expected:
                extra = ", ".join(sorted(present - expected)) or "none"
                lacking = ", ".join(sorted(expected - present)) or "none"
                raise BackupError(
                    "the schema made by the backup's migrations does not match the backup's tables "
                    f"(tables not in the backup: {extra}; tables of the backup missing: {lacking})"
                )
            if present:
                names = ", ".join(qualified(*name.split(".", 1)) for name in sorted(present))
                await conn.execute(f"TRUNCATE {names}")
            for table in manifest.tables:
                columns = await _columns(conn, table.schema, table.name)
                unknown = [c for c in table.columns if c not in columns]
                if unknown:
                    raise BackupError(f"{table.qualified} has no column(s) {', '.join(unknown)}")
                with gzip.open(directory / safe_relative(table.file), "rb") as source:
                    status = await conn.copy_to_table(
                        table.name,
                        schema_name=table.schema,
                        columns=list(table.columns),
                        source=source,
                        format="text",
                    )
                count = _copied(status)
                if count != table.rows:
                    raise BackupError(
                        f"{table.file} holds {count} row(s), the manifest says {table.rows}: "
                        "the backup is damaged"
                    )
                rows[table.qualified] = count
                echo(f"  {table.qualified}: {count} row(s)")
            for seq in manifest.sequences:
                await conn.execute(
                    "SELECT setval(to_regclass($1), $2, $3)",
                    qualified(seq.schema, seq.name),
                    seq.last_value,
                    seq.is_called,
                )
            if "store.secret_events_state" in present:
                # WatchSecrets resume tokens name the database's epoch: tokens handed out after the backup
                # point at positions that the restored stream will reuse, so they must be refused.
                await conn.execute(
                    "UPDATE store.secret_events_state SET epoch = $1", secrets.randbelow(2**53 - 1) + 1
                )
        for schema in schemas:
            for name in await _tables(conn, schema):
                await conn.execute(f"ANALYZE {qualified(schema, name)}")
    except asyncpg.PostgresError as exc:
        raise BackupError(
            f"PostgreSQL refused the restore ({type(exc).__name__}: {exc}); nothing was loaded"
        ) from None
    finally:
        await conn.close()
    return Restored(rows=rows, passwords=dict(provisioned.passwords))

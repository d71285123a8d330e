"""Database roles: each service that keeps data gets its own PostgreSQL role and schema, with rights on its
own tables only. The kms role (``<database>_kms``) owns schema ``kms`` and cannot read the store's tables; the
store role (``<database>_store``) owns schema ``store`` and cannot read the kms's key material. The gateway
and the rotation service get no database access at all.

:func:`provision` does it, idempotently, as an administrator (a role that may create roles): roles with
LOGIN and the given (or new random) passwords, schemas owned by those roles (objects left in them by an older
deployment are handed over), CONNECT on the database for those roles only (revoked from PUBLIC), and no
CREATE in schema ``public``. The roles keep CREATE on the database because the migrations start with
``CREATE SCHEMA IF NOT EXISTS``, which PostgreSQL checks against that right even when the schema exists; a
schema a role creates is its own and closed to the other role. Role names carry the database name, so
deployments that share a PostgreSQL server (several regions, the test databases) do not share roles.
``make run`` and the test harness call it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

#: The services that keep data, and the schema each owns.
SCHEMAS: Mapping[str, str] = {"kms": "kms", "store": "store"}


def role_name(database: str, service: str) -> str:
    """``<database>_<service>``, lower case, only [a-z0-9_], at most 63 characters (PostgreSQL's limit)."""
    base = re.sub(r"[^a-z0-9_]", "_", database.lower())
    return f"{base[: 62 - len(service)]}_{service}"


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def dsn_for(admin_url: str, *, user: str, password: str) -> str:
    """``admin_url`` (same host, port, database and options) logging in as ``user`` with ``password``."""
    parts = urlsplit(admin_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True, slots=True)
class Provisioned:
    """The roles made for one database: the password and the database URL of each service's role."""

    passwords: Mapping[str, str]
    dsns: Mapping[str, str]


async def _exec_format(conn: asyncpg.Connection, template: str, *args: str) -> None:
    """Run a utility statement built by PostgreSQL's ``format`` (%I identifiers, %L literals quoted there)."""
    placeholders = ", ".join(f"${i}::text" for i in range(1, len(args) + 1))
    statement: str = await conn.fetchval(f"SELECT format('{template}', {placeholders})", *args)
    await conn.execute(statement)


async def _hand_over(conn: asyncpg.Connection, schema: str, role: str) -> None:
    """Make ``role`` own ``schema`` and every table, view and sequence in it."""
    await _exec_format(conn, "ALTER SCHEMA %I OWNER TO %I", schema, role)
    rows = await conn.fetch(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
        " AND pg_get_userbyid(c.relowner) <> $2"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))",
        schema,
        role,
    )
    kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
    for row in rows:
        kind = kinds.get(row["relkind"], "FOREIGN TABLE")
        await _exec_format(conn, f"ALTER {kind} %I.%I OWNER TO %I", schema, row["relname"], role)


async def provision(
    admin_url: str,
    *,
    passwords: Mapping[str, str] | None = None,
    services: tuple[str, ...] = tuple(SCHEMAS),
    keep_unknown: bool = False,
) -> Provisioned:
    """Create (or bring up to date) the roles and schemas of ``services`` in the database ``admin_url``
    names. ``passwords`` (service -> password) are kept, e.g. from a previous run; missing ones are made.
    ``keep_unknown``: a role that exists and has no password in ``passwords`` keeps the one it has (it is
    then left out of the result's passwords and DSNs): ``coffer admin restore`` into a deployment whose
    passwords it is not given."""
    database = database_of(admin_url)
    known = dict(passwords or {})
    out_passwords: dict[str, str] = {}
    dsns: dict[str, str] = {}
    conn = await asyncpg.connect(admin_url)
    try:
        async with conn.transaction():
            await _exec_format(conn, "REVOKE ALL ON DATABASE %I FROM PUBLIC", database)
            await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            for service in services:
                role = role_name(database, service)
                password = known.get(service) or secrets.token_urlsafe(24)
                exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
                verb = "ALTER" if exists else "CREATE"
                options = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
                if exists and keep_unknown and not known.get(service):
                    await _exec_format(conn, f"ALTER ROLE %I WITH {options}", role)
                    password = ""
                else:
                    await _exec_format(conn, f"{verb} ROLE %I WITH {options} PASSWORD %L", role, password)
                await _exec_format(
                    conn, "GRANT CONNECT, TEMPORARY, CREATE ON DATABASE %I TO %I", database, role
                )
                schema = SCHEMAS[service]
                await _exec_format(conn, "CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I", schema, role)
                await _hand_over(conn, schema, role)
                await _exec_format(conn, "REVOKE ALL ON SCHEMA %I FROM PUBLIC", schema)
                if password:
                    out_passwords[service] = password
                    dsns[service] = dsn_for(admin_url, user=role, password=password)
    finally:
        await conn.close()
    return Provisioned(passwords=out_passwords, dsns=dsns)


async def drop_roles(admin_url: str, database: str, *, services: tuple[str, ...] = tuple(SCHEMAS)) -> None:
    """Drop the roles of ``database`` (after the database itself was dropped)."""
    conn = await asyncpg.connect(admin_url)
    try:
        for service in services:
            await _exec_format(conn, "DROP ROLE IF EXISTS %I", role_name(database, service))
    finally:
        await conn.close()


def read_passwords(path: Path) -> dict[str, str]:
    """The role passwords a previous run kept in ``path`` ({} when there is none)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {str(k): str(v) for k, v in dict(data).items()}


def write_passwords(path: Path, passwords: Mapping[str, str]) -> None:
    """Keep the role passwords in ``path``, readable by the owner only (0600, written atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(dict(passwords), fh, indent=2, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


async def ensure_roles(admin_url: str, passwords_file: Path) -> dict[str, str]:
    """:func:`provision` with the passwords kept in ``passwords_file`` (created 0600 on the first run, so a
    second run logs in with the same passwords); returns each data service's database URL."""
    done = await provision(admin_url, passwords=read_passwords(passwords_file))
    write_passwords(passwords_file, done.passwords)
    return dict(done.dsns)

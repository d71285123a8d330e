"""PostgreSQL rotators (asyncpg): ``postgresql-single-user`` and ``postgresql-alternating-users``.

``host`` may be a host name / address or a Unix-socket directory (a path starting with ``/``). Passwords never
travel as SQL text built on our side: PostgreSQL's ALTER/CREATE ROLE take no bind parameters, so the statement
is built by the server itself with ``format('... %I ... %L', $1, $2)`` (quote_ident / quote_literal) from
bound parameters, then executed — and what is sent is a SCRAM-SHA-256 verifier computed here, so the
plaintext password never reaches the server or its logs. Old sessions keep working after a password
change — that is PostgreSQL's behaviour.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Any

import asyncpg

from coffer.core.rotation import POSTGRESQL_ALTERNATING_USERS, POSTGRESQL_SINGLE_USER
from coffer.rotation.rotators.base import RotationStepError
from coffer.rotation.rotators.database import (
    AlternatingUsersRotator,
    DatabaseDriver,
    DbCredentials,
    SingleUserRotator,
    scrub,
)

CONNECT_TIMEOUT_SECONDS = 10.0
SCRAM_ITERATIONS = 4096


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's stored form of a password (``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>``,
    RFC 5802 / 7677), computed here so the plaintext never reaches the server (nor its statement log). Only
    for printable ASCII passwords, for which SASLprep is the identity; anything else is sent as a literal."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _password_literal(password: str) -> str:
    """What goes after PASSWORD: a SCRAM verifier for printable ASCII, else the password itself."""
    if password.isascii() and password.isprintable():
        return scram_verifier(password)
    return password


class PostgresDriver(DatabaseDriver[Any]):
    label = "PostgreSQL"
    engines = frozenset({"postgres", "postgresql", "aurora-postgresql"})
    default_port = 5432
    default_dbname = "postgres"
    max_username_length = 63  # NAMEDATALEN - 1

    async def connect(self, creds: DbCredentials) -> Any | None:
        try:
            return await asyncpg.connect(
                host=creds.host,
                port=creds.port,
                user=creds.username,
                password=creds.password,
                database=creds.dbname or "postgres",
                timeout=CONNECT_TIMEOUT_SECONDS,
                statement_cache_size=0,
            )
        except asyncpg.InvalidAuthorizationSpecificationError:
            return None  # wrong password, unknown role, no pg_hba entry for it
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            detail = scrub(str(exc) or type(exc).__name__, (creds.password,))
            raise RotationStepError(
                f"cannot connect to PostgreSQL at {creds.host}:{creds.port} as {creds.username!r}: "
                f"{type(exc).__name__}: {detail}"
            ) from None

    async def close(self, conn: Any) -> None:
        try:
            await asyncio.wait_for(conn.close(), timeout=5.0)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):  # no clean goodbye
            conn.terminate()

    async def probe(self, conn: Any) -> None:
        await conn.fetchval("SELECT now()")

    async def set_own_password(self, conn: Any, *, username: str, password: str) -> None:
        sql = await conn.fetchval(
            "SELECT format('ALTER ROLE %I WITH PASSWORD %L', $1::text, $2::text)",
            username,
            _password_literal(password),
        )
        await conn.execute(sql)

    async def upsert_user(self, conn: Any, *, username: str, password: str, grants_from: str) -> None:
        async with conn.transaction():
            exists = await conn.fetchval("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", username)
            if exists:
                sql = await conn.fetchval(
                    "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)",
                    username,
                    _password_literal(password),
                )
                await conn.execute(sql)
                return
            # Create the clone and give it the original's privileges (membership in the original role), in one
            # transaction so a retry never finds a clone without its grants.
            sql = await conn.fetchval(
                "SELECT format('CREATE ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)",
                username,
                _password_literal(password),
            )
            await conn.execute(sql)
            grant = await conn.fetchval(
                "SELECT format('GRANT %I TO %I', $1::text, $2::text)", grants_from, username
            )
            await conn.execute(grant)


class PostgresSingleUserRotator(SingleUserRotator):
    name = POSTGRESQL_SINGLE_USER

    def __init__(self) -> None:
        super().__init__(name=self.name, driver=PostgresDriver())


class PostgresAlternatingUsersRotator(AlternatingUsersRotator):
    name = POSTGRESQL_ALTERNATING_USERS

    def __init__(self) -> None:
        super().__init__(name=self.name, driver=PostgresDriver())


#: Built-in rotator name → class (the rotation service's registry instantiates these).
ROTATORS: dict[str, Callable[[], SingleUserRotator | AlternatingUsersRotator]] = {
    PostgresSingleUserRotator.name: PostgresSingleUserRotator,
    PostgresAlternatingUsersRotator.name: PostgresAlternatingUsersRotator,
}

"""PostgreSQL rotators (asyncpg): ``postgresql-single-user`` and ``postgresql-alternating-users``.

``host`` is a TCP host the rotation target policy allows (never a Unix-socket directory); the connection goes
to the checked address with verified TLS unless the secret opts out (``"ssl": false``, see ``database.py``),
and a server that asks for the password in cleartext is refused before the password is sent.

Passwords never travel as SQL text built on our side: PostgreSQL's ALTER/CREATE ROLE take no bind parameters,
so the statement is built by the server itself with ``format('... %I ... %L', $1, $2)`` (quote_ident /
quote_literal) from bound parameters, then executed — and what is sent is always a SCRAM-SHA-256 verifier
computed here (after SASLprep, as clients do at login), so no password, ASCII or not, ever reaches the server
or its statement log. Old sessions keep working after a password change — that is PostgreSQL's behaviour.

Alternating users: the clone (``<user>_clone``) is created with a comment marking it as Coffer's clone of
``<user>`` and as a member of ``<user>``; an existing role is altered only when it carries that mark or that
membership, so an unrelated role that happens to have the clone's name is never taken over.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import ssl
import stringprep
import struct
import unicodedata
from collections.abc import Callable
from typing import Any

import asyncpg

from coffer.core.rotation import POSTGRESQL_ALTERNATING_USERS, POSTGRESQL_SINGLE_USER
from coffer.rotation.rotators.base import RotationStepError
from coffer.rotation.rotators.database import (
    CLONE_SUFFIX,
    AlternatingUsersRotator,
    DatabaseDriver,
    DbCredentials,
    SingleUserRotator,
)
from coffer.targets import TargetGuard

CONNECT_TIMEOUT_SECONDS = 10.0
SCRAM_ITERATIONS = 4096
#: The comment Coffer puts on a clone it creates (followed by the original's name).
CLONE_MARK = "coffer:alternating-users clone of "
#: Authentication request codes of the PostgreSQL protocol ('R' messages).
AUTH_OK, AUTH_CLEARTEXT = 0, 3
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)

_PROHIBITED = (
    stringprep.in_table_a1,
    stringprep.in_table_c12,
    stringprep.in_table_c21_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def saslprep(password: str) -> str:
    """The password as SCRAM clients and PostgreSQL use it (RFC 4013 SASLprep): ASCII as it is; otherwise
    mapped and NFKC-normalized, or the original when the result would be empty, prohibited or break the
    bidirectional rules (PostgreSQL then uses the password unchanged)."""
    if password.isascii():
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    if not mapped:
        return password
    normal = unicodedata.normalize("NFKC", mapped)
    if not normal or any(prohibited(c) for c in normal for prohibited in _PROHIBITED):
        return password
    if any(stringprep.in_table_d1(c) for c in normal):
        if not (stringprep.in_table_d1(normal[0]) and stringprep.in_table_d1(normal[-1])):
            return password
        if any(stringprep.in_table_d2(c) for c in normal):
            return password
    return normal


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's stored form of a password (``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>``,
    RFC 5802 / 7677), computed here so the plaintext never reaches the server (nor its statement log)."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def auth_method(
    address: str, port: int, *, user: str, database: str, tls: ssl.SSLContext | None
) -> int | None:
    """The authentication request code the server answers a StartupMessage for ``user`` with (None: it
    answered something else, an error for instance), over the same TLS the real connection uses; no password
    is sent. asyncpg answers a cleartext request on its own, so this is how one is refused beforehand."""
    reader, writer = await asyncio.open_connection(address, port)
    try:
        if tls is not None:
            writer.write(_SSL_REQUEST)
            await writer.drain()
            if await reader.readexactly(1) != b"S":
                raise ConnectionError("the server refused TLS")
            await writer.start_tls(tls)
        body = struct.pack("!i", 196608)  # protocol 3.0
        for key, value in (("user", user), ("database", database)):
            body += key.encode() + b"\0" + value.encode() + b"\0"
        body += b"\0"
        writer.write(struct.pack("!i", len(body) + 4) + body)
        await writer.drain()
        kind = await reader.readexactly(1)
        (length,) = struct.unpack("!i", await reader.readexactly(4))
        payload = await reader.readexactly(max(0, min(length - 4, 65536)))
        if kind != b"R" or len(payload) < 4:
            return None
        code: int = struct.unpack("!i", payload[:4])[0]
        return code
    finally:
        writer.close()
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), timeout=2.0)


class PostgresDriver(DatabaseDriver[Any]):
    label = "PostgreSQL"
    engines = frozenset({"postgres", "postgresql", "aurora-postgresql"})
    default_port = 5432
    default_dbname = "postgres"
    max_username_length = 63  # NAMEDATALEN - 1

    async def connect(self, creds: DbCredentials) -> Any | None:
        address, tls = await self.endpoint(creds)
        database = creds.dbname or "postgres"
        try:
            method = await asyncio.wait_for(
                auth_method(address, creds.port, user=creds.username, database=database, tls=tls),
                timeout=CONNECT_TIMEOUT_SECONDS,
            )
            if method == AUTH_CLEARTEXT:
                raise RotationStepError(
                    f"PostgreSQL at {creds.host}:{creds.port} asks for {creds.username!r}'s password in "
                    "cleartext; Coffer refuses to send it (use scram-sha-256 in pg_hba.conf)"
                )
            return await asyncpg.connect(
                host=address,
                port=creds.port,
                user=creds.username,
                password=creds.password,
                database=database,
                timeout=CONNECT_TIMEOUT_SECONDS,
                statement_cache_size=0,
                ssl=tls if tls is not None else False,
            )
        except asyncpg.InvalidAuthorizationSpecificationError:
            return None  # wrong password, unknown role, no pg_hba entry for it
        except (
            TimeoutError,
            OSError,
            EOFError,
            asyncio.IncompleteReadError,
            ssl.SSLError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
        ) as exc:
            raise self.unreachable(creds, exc) from None

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
            scram_verifier(password),
        )
        await conn.execute(sql)

    @staticmethod
    async def is_coffer_clone(conn: Any, *, clone: str, original: str) -> bool:
        """``clone`` carries Coffer's mark for ``original``, or is a member of ``original``."""
        found = await conn.fetchval(
            """
            SELECT shobj_description(c.oid, 'pg_authid') = $3
                   OR EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m
                              JOIN pg_catalog.pg_roles o ON o.oid = m.roleid
                              WHERE m.member = c.oid AND o.rolname = $2)
            FROM pg_catalog.pg_roles c WHERE c.rolname = $1
            """,
            clone,
            original,
            CLONE_MARK + original,
        )
        return bool(found)

    async def upsert_user(self, conn: Any, *, username: str, password: str, grants_from: str) -> None:
        clone, original = (
            (username, grants_from) if username == grants_from + CLONE_SUFFIX else (grants_from, username)
        )
        async with conn.transaction():
            exists = await conn.fetchval("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", username)
            if exists:
                if not await self.is_coffer_clone(conn, clone=clone, original=original):
                    raise RotationStepError(
                        f"the role {clone!r} exists but is not a clone Coffer made of {original!r} (it is "
                        f"neither a member of {original!r} nor marked by Coffer); refusing to change "
                        f"{username!r}'s password. Drop or rename {clone!r}, or make it a member of "
                        f"{original!r} if it is meant to be the alternate user"
                    )
                sql = await conn.fetchval(
                    "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)",
                    username,
                    scram_verifier(password),
                )
                await conn.execute(sql)
                return
            # Create the clone, mark it, and give it the original's privileges (membership in the original
            # role), in one transaction so a retry never finds a clone without its grants.
            statements = [("CREATE ROLE %I WITH LOGIN PASSWORD %L", (username, scram_verifier(password)))]
            if username == clone:
                statements.append(("COMMENT ON ROLE %I IS %L", (username, CLONE_MARK + original)))
            statements.append(("GRANT %I TO %I", (grants_from, username)))
            for template, args in statements:
                sql = await conn.fetchval(f"SELECT format('{template}', $1::text, $2::text)", *args)
                await conn.execute(sql)


class PostgresSingleUserRotator(SingleUserRotator):
    name = POSTGRESQL_SINGLE_USER

    def __init__(self, *, targets: TargetGuard | None = None) -> None:
        super().__init__(name=self.name, driver=PostgresDriver(targets=targets))


class PostgresAlternatingUsersRotator(AlternatingUsersRotator):
    name = POSTGRESQL_ALTERNATING_USERS

    def __init__(self, *, targets: TargetGuard | None = None) -> None:
        super().__init__(name=self.name, driver=PostgresDriver(targets=targets))


#: Built-in rotator name → class (the rotation service's registry instantiates these).
ROTATORS: dict[str, Callable[[], SingleUserRotator | AlternatingUsersRotator]] = {
    PostgresSingleUserRotator.name: PostgresSingleUserRotator,
    PostgresAlternatingUsersRotator.name: PostgresAlternatingUsersRotator,
}

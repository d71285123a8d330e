"""MySQL / MariaDB rotators (aiomysql): ``mysql-single-user`` and ``mysql-alternating-users``.

Accounts are ``'<user>'@'%'`` as in AWS's templates. ``host`` is a TCP host the rotation target policy
allows (never a Unix socket); the connection goes to the checked address with verified TLS unless the secret
opts out (``"ssl": false``, see ``database.py``): a server that offers no TLS is refused rather than used in
plaintext, and one that asks for the password in cleartext (``mysql_clear_password``) is always refused.
Passwords and user names always go through the driver's parameter quoting (``%s``), never through string
concatenation. Single user: MariaDB ``SET PASSWORD = PASSWORD(%s)`` (any user may change its own), MySQL
``ALTER USER CURRENT_USER() IDENTIFIED BY %s``. Alternating users: the master creates ``<user>_clone`` with
``CREATE USER ... IDENTIFIED BY``, copies ``SHOW GRANTS`` of the original, and sets the password with
``ALTER USER``. Existing sessions keep working — that is the server's behaviour.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import aiomysql
import pymysql
from pymysql.constants import CLIENT

from coffer.core.rotation import MYSQL_ALTERNATING_USERS, MYSQL_SINGLE_USER
from coffer.rotation.rotators.base import RotationStepError
from coffer.rotation.rotators.database import (
    AlternatingUsersRotator,
    DatabaseDriver,
    DbCredentials,
    SingleUserRotator,
)
from coffer.targets import TargetGuard

CONNECT_TIMEOUT_SECONDS = 10
# ER_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR
_AUTH_ERRORS = {1045, 1044, 1698}
_TO_USER = re.compile(r"\s+TO\s+(?:`(?:[^`]|``)*`|'(?:[^']|'')*')@(?:`(?:[^`]|``)*`|'(?:[^']|'')*').*$", re.S)


def grant_prefix(grant_line: str) -> str | None:
    """``GRANT ... ON ...`` without its ``TO <user>@<host> [IDENTIFIED BY ...] [WITH ...]`` tail, or None
    for lines that must not be copied (PROXY grants)."""
    if not grant_line.upper().startswith("GRANT ") or grant_line.upper().startswith("GRANT PROXY"):
        return None
    match = _TO_USER.search(grant_line)
    if match is None:
        return None
    return grant_line[: match.start()]


class CleartextRefused(pymysql.err.OperationalError):  # type: ignore[misc]
    """The server asked for the password in cleartext."""


class _VerifiedConnection(aiomysql.Connection):  # type: ignore[misc]
    """aiomysql's connection, minus two silent downgrades: it would go on in plaintext when TLS was asked
    for but the server offers none, and it answers a cleartext password request."""

    async def _request_authentication(self) -> None:
        if self._ssl_context is not None and not self.server_capabilities & CLIENT.SSL:
            raise pymysql.err.OperationalError(2026, "the server does not offer TLS")
        if self._server_auth_plugin in ("mysql_clear_password", "mysql_old_password"):
            raise CleartextRefused(2059, f"the server asks for {self._server_auth_plugin}")
        await super()._request_authentication()

    async def _process_auth(self, plugin_name: bytes, auth_packet: Any) -> Any:
        if plugin_name in (b"mysql_clear_password", b"mysql_old_password"):
            raise CleartextRefused(2059, f"the server asks for {plugin_name.decode()}")
        return await super()._process_auth(plugin_name, auth_packet)


class MySqlDriver(DatabaseDriver[Any]):
    label = "MySQL/MariaDB"
    engines = frozenset({"mysql", "mariadb", "aurora-mysql", "aurora"})
    default_port = 3306
    default_dbname = None
    max_username_length = 32  # MySQL 5.7+ (MariaDB allows 80)

    async def connect(self, creds: DbCredentials) -> Any | None:
        address, tls = await self.endpoint(creds)
        conn = _VerifiedConnection(
            host=address,
            port=creds.port,
            user=creds.username,
            password=creds.password,
            db=creds.dbname,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            autocommit=True,
            ssl=tls,
        )
        try:
            await conn._connect()
        except CleartextRefused:
            raise RotationStepError(
                f"MySQL/MariaDB at {creds.host}:{creds.port} asks for {creds.username!r}'s password in "
                "cleartext; Coffer refuses to send it"
            ) from None
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] in _AUTH_ERRORS:
                return None
            raise self.unreachable(creds, exc) from None
        except (TimeoutError, OSError, pymysql.err.MySQLError) as exc:
            raise self.unreachable(creds, exc) from None
        return conn

    async def close(self, conn: Any) -> None:
        try:
            await asyncio.wait_for(conn.ensure_closed(), timeout=5.0)
        except (TimeoutError, OSError, pymysql.err.Error):  # no clean goodbye: drop the socket instead
            conn.close()

    async def probe(self, conn: Any) -> None:
        async with conn.cursor() as cur:
            await cur.execute("SELECT NOW()")
            await cur.fetchall()

    @staticmethod
    async def _is_mariadb(cur: Any) -> bool:
        await cur.execute("SELECT VERSION()")
        row = await cur.fetchone()
        return "mariadb" in str(row[0]).lower()

    async def set_own_password(self, conn: Any, *, username: str, password: str) -> None:
        async with conn.cursor() as cur:
            if await self._is_mariadb(cur):
                await cur.execute("SET PASSWORD = PASSWORD(%s)", (password,))
            else:
                await cur.execute("ALTER USER CURRENT_USER() IDENTIFIED BY %s", (password,))

    async def upsert_user(self, conn: Any, *, username: str, password: str, grants_from: str) -> None:
        async with conn.cursor() as cur:
            await cur.execute("SELECT COUNT(*) FROM mysql.user WHERE User = %s AND Host = '%%'", (username,))
            (count,) = await cur.fetchone()
            if not count:
                await cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (username, password))
            await cur.execute("SHOW GRANTS FOR %s@'%%'", (grants_from,))
            grants = [str(row[0]) for row in await cur.fetchall()]
            for line in grants:
                prefix = grant_prefix(line)
                if prefix is None:
                    continue
                # the prefix is server output (identifiers already quoted); '%' must be doubled for the driver
                await cur.execute(prefix.replace("%", "%%") + " TO %s@'%%'", (username,))
            await cur.execute("ALTER USER %s@'%%' IDENTIFIED BY %s", (username, password))


class MySqlSingleUserRotator(SingleUserRotator):
    name = MYSQL_SINGLE_USER

    def __init__(self, *, targets: TargetGuard | None = None) -> None:
        super().__init__(name=self.name, driver=MySqlDriver(targets=targets))


class MySqlAlternatingUsersRotator(AlternatingUsersRotator):
    name = MYSQL_ALTERNATING_USERS

    def __init__(self, *, targets: TargetGuard | None = None) -> None:
        super().__init__(name=self.name, driver=MySqlDriver(targets=targets))


#: Built-in rotator name → class (the rotation service's registry instantiates these).
ROTATORS: dict[str, Callable[[], SingleUserRotator | AlternatingUsersRotator]] = {
    MySqlSingleUserRotator.name: MySqlSingleUserRotator,
    MySqlAlternatingUsersRotator.name: MySqlAlternatingUsersRotator,
}

"""A PostgreSQL that checks passwords, for tests that rotate real database passwords.

The harness's own PostgreSQL trusts everyone, so it would accept any password. ``scram_postgres()``
starts a second embedded server: the superuser gets a password while the server still trusts, then
``pg_hba.conf`` is rewritten to ``scram-sha-256`` for local and host lines, the configuration reloaded,
and the function returns only once a wrong password is refused.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import asyncpg

from coffer.embedded import EmbeddedPostgres
from coffer.testing.wait import eventually_sync

HBA = """# written by the test harness: passwords required everywhere
local   all   all                 scram-sha-256
host    all   all   127.0.0.1/32  scram-sha-256
host    all   all   ::1/128       scram-sha-256
"""


@dataclass(frozen=True)
class ScramPostgres:
    """How to reach the server: ``host`` is its Unix-socket directory."""

    host: str
    port: int
    superuser: str
    password: str

    async def connect(
        self, user: str | None = None, password: str | None = None, *, database: str = "postgres"
    ) -> asyncpg.Connection:
        return await asyncpg.connect(
            host=self.host,
            port=self.port,
            user=user or self.superuser,
            password=self.password if password is None else password,
            database=database,
            timeout=10,
        )


async def _require_passwords(url: str, password: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        sql = await conn.fetchval("SELECT format('ALTER ROLE postgres WITH PASSWORD %L', $1::text)", password)
        await conn.execute(sql)
        hba = await conn.fetchval("SHOW hba_file")
        await asyncio.to_thread(Path(hba).write_text, HBA)
        await conn.fetchval("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def _refuses_wrong_password(host: str, port: int) -> bool:
    try:
        conn = await asyncpg.connect(
            host=host, port=port, user="postgres", password="wrong", database="postgres"
        )
    except asyncpg.InvalidPasswordError:
        return True
    await conn.close()
    return False


@contextmanager
def scram_postgres(*, ready_timeout: float = 10.0) -> Iterator[ScramPostgres]:
    """Start a password-checking PostgreSQL in a temporary directory; stop and remove it on exit."""
    # Not under pytest's basetemp (see tests/conftest.py: as root the server runs as another user, which must
    # traverse every parent of its data directory).
    root = Path(tempfile.mkdtemp(prefix="coffer-test-pgscram-"))
    server = EmbeddedPostgres(root / "data")
    try:
        uri = server.start()
        parsed = urlparse(uri)
        host = parse_qs(parsed.query).get("host", [str(root / "data")])[0]
        port = parsed.port or 5432
        password = secrets.token_urlsafe(18)
        asyncio.run(_require_passwords(server.url(), password))
        eventually_sync(  # the reload is asynchronous
            lambda: asyncio.run(_refuses_wrong_password(host, port)),
            timeout=ready_timeout,
            message="PostgreSQL to stop trusting connections after rewriting pg_hba.conf",
        )
        yield ScramPostgres(host=host, port=port, superuser="postgres", password=password)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

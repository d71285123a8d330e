"""Test harness: real PostgreSQL and Redis servers started by the harness itself (embedded wheels), a fresh
database per test, and a development PKI. Nothing here needs the machine's own servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from coffer.embedded import EmbeddedPostgres, EmbeddedRedis
from coffer.pki import ensure_pki
from coffer.testing.stack import fresh_database, temporary_postgres


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    with temporary_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def database_url(pg_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """A fresh, empty database for one test (``coffer.testing.stack.fresh_database``)."""
    async with fresh_database(pg_server) as url:
        yield url


@pytest.fixture
async def redis_url(redis_server: EmbeddedRedis) -> AsyncIterator[str]:
    client = aioredis.from_url(redis_server.url())
    await client.flushall()
    await client.aclose()
    yield redis_server.url()


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    ensure_pki(d)
    return d

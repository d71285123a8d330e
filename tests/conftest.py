"""Test harness: real PostgreSQL and Redis servers started by the harness itself (embedded wheels), a fresh
database per test, and a development PKI. Nothing here needs the machine's own servers."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from coffer.embedded import EmbeddedPostgres, EmbeddedRedis
from coffer.pki import ensure_pki
from coffer.testing.stack import fresh_database


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    # Not under pytest's basetemp: as root the server runs as the 'pgserver' user, which must traverse every
    # parent of its data dir, and each new pytest session resets /tmp/pytest-of-<user> to 0700 (so a second,
    # concurrent session would lock this one's server out of its own files).
    root = Path(tempfile.mkdtemp(prefix="coffer-test-pg-"))
    server = EmbeddedPostgres(root / "data")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


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

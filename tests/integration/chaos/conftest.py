"""Fixtures of the chaos tests (issue 13): a PostgreSQL of their own (restarted under load, so never the
session's shared one) and the real kms → store → gateway stack on it, in-process.

``COFFER_CHAOS=long`` (``make chaos``) runs each fault for the issue's full length (the KMS down ten
seconds, ...); ``make test`` runs the same scenarios shorter."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from coffer import logs
from coffer.embedded import EmbeddedPostgres
from coffer.testing.stack import ServiceStack, fresh_database, provisioned_stack, temporary_postgres

LONG = os.environ.get("COFFER_CHAOS", "") == "long"


@pytest.fixture(scope="session", autouse=True)
def quiet_services() -> Iterator[None]:
    """Under ``make chaos`` (which prints what each scenario measured) services log warnings and errors."""
    if not LONG:
        yield
        return
    logs.configure(service="chaos", level="warning")
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def own_pg() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server for this module alone (the tests restart it)."""
    with temporary_postgres("coffer-test-chaos-pg-") as server:
        yield server


@pytest.fixture
async def chaos_stack(tmp_path: Path, pki_dir: Path, own_pg: EmbeddedPostgres) -> AsyncIterator[ServiceStack]:
    async with fresh_database(own_pg) as url:
        services = await provisioned_stack(home=tmp_path, pki_dir=pki_dir, database_url=url)
        try:
            await services.start_kms()
            await services.start_store()
            await services.bootstrap_sealed()
            await services.start_gateway()
            yield services
        finally:
            await services.aclose()

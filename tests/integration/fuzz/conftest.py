"""Fixtures: the real kms → store → gateway stack (``coffer.testing.stack``) the fuzzer drives."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from coffer import logs
from coffer.testing.stack import ServiceStack, provisioned_stack


@pytest.fixture(scope="session")
def quiet_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under `make fuzz` (COFFER_FUZZ_REQUESTS set), which prints its counts, the services' log lines (each
    refused request logs) go to one file, warnings and errors only."""
    if "COFFER_FUZZ_REQUESTS" not in os.environ:
        yield
        return
    log_file = tmp_path_factory.mktemp("fuzz-logs") / "services.log"
    logs.configure(service="fuzz", level="warning", log_file=log_file)
    print(f"\nservice logs (warnings and errors): {log_file}")
    yield
    structlog.reset_defaults()


@pytest.fixture
async def fuzz_stack(
    tmp_path: Path, pki_dir: Path, database_url: str, quiet_logs: None
) -> AsyncIterator[ServiceStack]:
    services = await provisioned_stack(home=tmp_path, pki_dir=pki_dir, database_url=database_url)
    try:
        await services.start_kms()
        await services.start_store()
        await services.start_gateway()
        yield services
    finally:
        await services.aclose()

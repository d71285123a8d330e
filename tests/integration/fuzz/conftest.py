"""Fixtures: the real kms → store → gateway stack (``coffer.testing.stack``) the fuzzer drives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coffer.testing.stack import ServiceStack, provisioned_stack


@pytest.fixture
async def fuzz_stack(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[ServiceStack]:
    services = await provisioned_stack(home=tmp_path, pki_dir=pki_dir, database_url=database_url)
    try:
        await services.start_kms()
        await services.start_store()
        await services.start_gateway()
        yield services
    finally:
        await services.aclose()

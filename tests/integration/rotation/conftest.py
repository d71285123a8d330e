"""Fixtures: kms → store → gateway, real and in-process on a fresh database, each data service under its own
role (``coffer.testing.stack``; the public API through the SDK),
optionally with the rotation service on the harness's Redis — tiny poll, lease and back-off settings so
retries and reclaims happen while a test watches."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coffer.client.aio import AsyncCofferClient
from coffer.client.credentials import Credentials
from coffer.settings import Settings
from coffer.testing.stack import ServiceStack, provisioned_stack


@dataclass
class Stack:
    services: ServiceStack
    client: AsyncCofferClient
    endpoint: str
    ca_file: Path
    admin_credentials: Credentials

    @property
    def env(self) -> dict[str, str]:
        return self.services.env

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    @property
    def rotation(self) -> Any:
        return self.services.rotation

    async def start_rotation(self, **overrides: str) -> Any:
        return await self.services.start_rotation(**overrides)

    async def stop_rotation(self) -> None:
        await self.services.stop_rotation()


async def _start(tmp_path: Path, pki_dir: Path, database_url: str, redis_url: str) -> Stack:
    services = await provisioned_stack(
        home=tmp_path,
        pki_dir=pki_dir,
        database_url=database_url,
        COFFER_REDIS_URL=redis_url,
        COFFER_ROTATION_POLL_SECONDS="0.2",
        COFFER_ROTATION_LEASE_SECONDS="2",
        COFFER_ROTATION_BACKOFF_BASE_SECONDS="0.05",
        COFFER_ROTATION_MAX_TRIES="3",
        COFFER_ROTATION_WORKERS="2",
        COFFER_ROTATION_STREAM_PREFIX=f"test:{uuid.uuid4().hex[:8]}",
        # the tests' rotation functions and targets listen on loopback (Coffer's own endpoints stay refused)
        COFFER_ROTATION_ALLOWED_TARGETS="127.0.0.1",
    )
    try:
        await services.start_kms()
        await services.start_store()
        admin = await services.credential("user/admin")
        await services.rotation_credentials()
        gateway = await services.start_gateway()
    except BaseException:
        await services.aclose()
        raise
    endpoint = f"127.0.0.1:{gateway.port}"
    client = AsyncCofferClient(endpoint, services.ca_file, admin)
    return Stack(services, client, endpoint, services.ca_file, admin)


@pytest.fixture
async def stack(tmp_path: Path, pki_dir: Path, database_url: str, redis_url: str) -> AsyncIterator[Stack]:
    s = await _start(tmp_path, pki_dir, database_url, redis_url)
    try:
        yield s
    finally:
        await s.client.close()
        await s.services.aclose()

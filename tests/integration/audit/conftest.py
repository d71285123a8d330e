"""Fixtures: kms → store → gateway, all real, in-process, on a fresh database; a client profile for the
CLI; the administrator's connection to look at (and tamper with) the stored trail."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from coffer.cli.main import main
from coffer.client import AsyncCofferClient, Credentials
from coffer.testing.stack import ServiceStack, provisioned_stack


@dataclass
class AuditStack:
    services: ServiceStack
    endpoint: str
    ca_file: Path
    token: Credentials
    profile: Path
    database_url: str
    #: The access key of IAM user ``outsider`` (allow-all policy): not an operator.
    outsider: Credentials

    def client(self, token: Credentials | None = None) -> AsyncCofferClient:
        return AsyncCofferClient(self.endpoint, self.ca_file, token or self.token)

    def write_profile(self, path: Path, token: Credentials) -> Path:
        path.write_text(
            json.dumps(
                {
                    "endpoint": self.endpoint,
                    "ca_file": str(self.ca_file),
                    "access_key_id": token.access_key_id,
                    "secret_access_key": token.secret_access_key,
                    "region": "local-1",
                }
            )
        )
        return path

    async def cli(self, *argv: str, profile: Path | None = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(
            main, [*argv, "--profile", str(profile or self.profile)], stdout=out, stderr=err
        )
        return code, out.getvalue(), err.getvalue()

    async def sql(self, query: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.database_url)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()


@pytest.fixture
async def audit_stack(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[AuditStack]:
    services = await provisioned_stack(home=tmp_path, pki_dir=pki_dir, database_url=database_url)
    try:
        await services.start_kms()
        await services.start_store()
        token = await services.credential("user/admin")
        outsider = await services.credential("user/outsider")
        gateway = await services.start_gateway()
        endpoint = f"127.0.0.1:{gateway.port}"
        stack = AuditStack(
            services, endpoint, services.ca_file, token, tmp_path / "profile.json", database_url, outsider
        )
        stack.write_profile(stack.profile, token)
        yield stack
    finally:
        await services.aclose()

"""Fixtures: kms → store → gateway, all real, in-process, on a fresh database, with an SDK client of the
legacy admin (account 000000000000, allow-all) and a profile for the CLI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coffer.client import AsyncCofferClient, Credentials
from coffer.store.__main__ import StoreRuntime
from coffer.testing.stack import ServiceStack, provisioned_stack


@dataclass
class IamStack:
    services: ServiceStack
    store: StoreRuntime
    endpoint: str
    database_url: str
    admin: AsyncCofferClient
    profile: Path
    tokens: dict[str, Credentials]

    def client(self, principal: str) -> AsyncCofferClient:
        """An SDK client with the access key of ``principal`` (one of PRINCIPALS)."""
        return AsyncCofferClient(self.endpoint, self.services.ca_file, self.tokens[principal])


#: The principals with credentials (the root admin's access key; IAM user coffer-rotation's key, which may
#: only assume role coffer-rotation).
PRINCIPALS = ("user/admin", "service/rotation")


@pytest.fixture
async def iam_stack(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[IamStack]:
    services = await provisioned_stack(home=tmp_path, pki_dir=pki_dir, database_url=database_url)
    try:
        await services.start_kms()
        store = await services.start_store()
        tokens = {p: await services.credential(p) for p in PRINCIPALS}
        token = tokens["user/admin"]
        gateway = await services.start_gateway()
        endpoint = f"127.0.0.1:{gateway.port}"
        profile = tmp_path / "profile.json"
        profile.write_text(
            json.dumps(
                {
                    "endpoint": endpoint,
                    "ca_file": str(services.ca_file),
                    "access_key_id": token.access_key_id,
                    "secret_access_key": token.secret_access_key,
                    "region": "local-1",
                    "services": {"gateway": endpoint},
                }
            )
        )
        admin = AsyncCofferClient(endpoint, services.ca_file, token)
        try:
            yield IamStack(services, store, endpoint, database_url, admin, profile, tokens)
        finally:
            await admin.close()
    finally:
        await services.aclose()

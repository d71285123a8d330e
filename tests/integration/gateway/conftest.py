"""Fixtures: a real gateway over TLS (in-process, port 0), alone or in front of the real store and kms
services running against a fresh PostgreSQL database, each under its own role (``coffer.testing.stack``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from coffer.client.credentials import Credentials, SigningInterceptor, signed_metadata
from coffer.gateway.__main__ import GatewayRuntime
from coffer.settings import Settings
from coffer.testing.stack import ServiceStack, provisioned_stack


@dataclass
class Gateway:
    runtime: GatewayRuntime
    settings: Settings
    endpoint: str
    ca_file: Path
    credentials: Credentials
    profile: Path
    services: ServiceStack | None = None

    def auth(self, method: str, request: Message, **kw: Any) -> tuple[tuple[str, str], ...]:
        """The metadata that signs one raw call of ``method`` (full name) with ``request`` as the admin."""
        return tuple(signed_metadata(self.credentials, method, request, **kw))

    def signer(self) -> SigningInterceptor:
        """An interceptor signing every call of a raw ``grpc.aio`` channel as the admin."""
        return SigningInterceptor(self.credentials)


def write_profile(
    path: Path, *, endpoint: str, pki_dir: Path, credentials: Credentials, services: dict[str, str]
) -> Path:
    path.touch(mode=0o600)
    path.write_text(
        json.dumps(
            {
                "endpoint": endpoint,
                "ca_file": str(pki_dir / "ca.crt"),
                "access_key_id": credentials.access_key_id,
                "secret_access_key": credentials.secret_access_key,
                "region": "local-1",
                "services": services,
                "operator_cert": str(pki_dir / "operator.crt"),
                "operator_key": str(pki_dir / "operator.key"),
            }
        )
    )
    return path


async def start_gateway(services: ServiceStack, tmp_path: Path) -> Gateway:
    """The gateway of ``services`` in front of whatever of it already runs (named in the client profile)."""
    creds = await services.credential("user/admin")
    settings = services.settings("gateway")
    runtime = await services.start_gateway()
    endpoint = f"127.0.0.1:{runtime.port}"
    running = {name: services.env[f"COFFER_{name.upper()}_ADDR"] for name in ("store", "kms")}
    profile = write_profile(
        tmp_path / "profile.json",
        endpoint=endpoint,
        pki_dir=services.pki_dir,
        credentials=creds,
        services={"gateway": endpoint, **{k: v for k, v in running.items() if not v.endswith(":0")}},
    )
    return Gateway(runtime, settings, endpoint, services.ca_file, creds, profile, services)


@asynccontextmanager
async def gateway_stack(
    tmp_path: Path, pki_dir: Path, database_url: str, **env: str
) -> AsyncIterator[Gateway]:
    """kms → store → gateway, all real, in-process, on a fresh database, with ``env`` over the stack's
    settings (the store serves the principal directory the gateway authenticates with, and holds the audit
    trail the kms records its calls in)."""
    services = await provisioned_stack(home=tmp_path, pki_dir=pki_dir, database_url=database_url, **env)
    try:
        await services.start_kms()
        await services.start_store()
        yield await start_gateway(services, tmp_path)
    finally:
        await services.aclose()


@pytest.fixture
async def lone_gateway(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[Gateway]:
    """The gateway with what authentication needs: enough for authentication, TLS and GetRandomPassword,
    which the gateway answers itself."""
    async with gateway_stack(tmp_path, pki_dir, database_url) as gw:
        yield gw


@pytest.fixture
async def kms_stack(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[Gateway]:
    """The public KMS API through the gateway."""
    async with gateway_stack(tmp_path, pki_dir, database_url) as gw:
        yield gw


@pytest.fixture
async def stack(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[Gateway]:
    """The whole public API (rotation functions may be registered on loopback, as the tests do)."""
    loopback = {"COFFER_ROTATION_ALLOWED_TARGETS": "127.0.0.1"}
    async with gateway_stack(tmp_path, pki_dir, database_url, **loopback) as gw:
        yield gw


@pytest.fixture
async def user(stack: Gateway) -> Credentials:
    """A new access key of IAM user ``aws`` (allow-all policy), its secret sealed by the store as IAM's
    CreateAccessKey seals it (the admin's bootstrap key is sealed a moment after the store starts)."""
    assert stack.services is not None
    return await stack.services.credential("user/aws")

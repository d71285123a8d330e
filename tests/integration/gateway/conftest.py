"""Fixtures: a real gateway over TLS (in-process, port 0), alone or in front of the real store and kms
services running against a fresh PostgreSQL database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coffer.credentials import create_credential
from coffer.gateway.__main__ import GatewayRuntime, serve
from coffer.settings import Settings


@dataclass
class Gateway:
    runtime: GatewayRuntime
    settings: Settings
    endpoint: str
    ca_file: Path
    token: str
    profile: Path


def base_env(tmp_path: Path, pki_dir: Path, database_url: str = "") -> dict[str, str]:
    return {
        "COFFER_HOME": str(tmp_path),
        "COFFER_PKI_DIR": str(pki_dir),
        "COFFER_DATABASE_URL": database_url,
        "COFFER_ROOT_KEY_FILE": str(tmp_path / "keys" / "root.key"),
        "COFFER_CREDENTIALS_FILE": str(tmp_path / "credentials.json"),
        "COFFER_GATEWAY_ADDR": "127.0.0.1:0",
        "COFFER_STORE_ADDR": "127.0.0.1:0",
        "COFFER_KMS_ADDR": "127.0.0.1:0",
    }


def write_profile(path: Path, *, endpoint: str, pki_dir: Path, token: str, services: dict[str, str]) -> Path:
    path.write_text(
        json.dumps(
            {
                "endpoint": endpoint,
                "ca_file": str(pki_dir / "ca.crt"),
                "token": token,
                "region": "local-1",
                "services": services,
                "operator_cert": str(pki_dir / "operator.crt"),
                "operator_key": str(pki_dir / "operator.key"),
            }
        )
    )
    return path


async def start_gateway(
    env: dict[str, str], tmp_path: Path, pki_dir: Path, services: dict[str, str]
) -> Gateway:
    settings = Settings.from_env(env)
    token = create_credential(settings.credentials_file, principal="user/admin")
    runtime = await serve(settings)
    endpoint = f"127.0.0.1:{runtime.port}"
    profile = write_profile(
        tmp_path / "profile.json",
        endpoint=endpoint,
        pki_dir=pki_dir,
        token=token,
        services={"gateway": endpoint, **services},
    )
    return Gateway(runtime, settings, endpoint, pki_dir / "ca.crt", token, profile)


@pytest.fixture
async def lone_gateway(tmp_path: Path, pki_dir: Path) -> AsyncIterator[Gateway]:
    """The gateway alone (store and kms unreachable): enough for authentication, TLS and GetRandomPassword,
    which the gateway answers itself."""
    gw = await start_gateway(base_env(tmp_path, pki_dir), tmp_path, pki_dir, {})
    yield gw
    await gw.runtime.aclose(grace=1.0)


@pytest.fixture
async def kms_stack(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[Gateway]:
    """kms → gateway (no store), real, in-process, on a fresh database: the public KMS API."""
    from coffer.kms.__main__ import serve as serve_kms
    from coffer.rootkey_file import ensure_root_key

    env = base_env(tmp_path, pki_dir, database_url)
    ensure_root_key(Path(env["COFFER_ROOT_KEY_FILE"]))
    kms = await serve_kms(Settings.from_env(env))
    env["COFFER_KMS_ADDR"] = f"127.0.0.1:{kms.port}"
    try:
        gw = await start_gateway(env, tmp_path, pki_dir, {"kms": env["COFFER_KMS_ADDR"]})
    except BaseException:
        await kms.aclose()
        raise
    try:
        yield gw
    finally:
        await gw.runtime.aclose(grace=1.0)
        await kms.aclose()


@pytest.fixture
async def stack(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[Gateway]:
    """kms → store → gateway, all real, in-process, on a fresh database."""
    from coffer.kms.__main__ import serve as serve_kms
    from coffer.rootkey_file import ensure_root_key
    from coffer.store.__main__ import serve as serve_store

    env = base_env(tmp_path, pki_dir, database_url)
    ensure_root_key(Path(env["COFFER_ROOT_KEY_FILE"]))
    kms = await serve_kms(Settings.from_env(env))
    env["COFFER_KMS_ADDR"] = f"127.0.0.1:{kms.port}"
    try:
        store = await serve_store(Settings.from_env(env))
    except BaseException:
        await kms.aclose()
        raise
    env["COFFER_STORE_ADDR"] = f"127.0.0.1:{store.port}"
    try:
        gw = await start_gateway(
            env, tmp_path, pki_dir, {"store": env["COFFER_STORE_ADDR"], "kms": env["COFFER_KMS_ADDR"]}
        )
    except BaseException:
        await store.aclose()
        await kms.aclose()
        raise
    try:
        yield gw
    finally:
        await gw.runtime.aclose(grace=1.0)
        await store.aclose()
        await kms.aclose()

"""Fixtures: kms → store → gateway, real and in-process on a fresh database (the public API through the SDK),
optionally with the rotation service on the harness's Redis — tiny poll, lease and back-off settings so
retries and reclaims happen while a test watches."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coffer.client.aio import AsyncCofferClient
from coffer.credentials import create_credential
from coffer.settings import Settings


@dataclass
class Stack:
    env: dict[str, str]
    client: AsyncCofferClient
    endpoint: str
    ca_file: Path
    admin_token: str
    closers: list[Callable[[], Any]] = field(default_factory=list)
    rotation: Any = None

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    async def start_rotation(self, **overrides: str) -> Any:
        from coffer.rotation.__main__ import serve as serve_rotation

        env = {**self.env, **overrides}
        self.rotation = await serve_rotation(Settings.from_env(env))
        return self.rotation

    async def stop_rotation(self) -> None:
        if self.rotation is not None:
            await self.rotation.aclose(grace=0.5)
            self.rotation = None


async def _start(tmp_path: Path, pki_dir: Path, database_url: str, redis_url: str) -> Stack:
    from coffer.gateway.__main__ import serve as serve_gateway
    from coffer.kms.__main__ import serve as serve_kms
    from coffer.rootkey_file import ensure_root_key
    from coffer.store.__main__ import serve as serve_store

    env = {
        "COFFER_HOME": str(tmp_path),
        "COFFER_PKI_DIR": str(pki_dir),
        "COFFER_DATABASE_URL": database_url,
        "COFFER_REDIS_URL": redis_url,
        "COFFER_ROOT_KEY_FILE": str(tmp_path / "keys" / "root.key"),
        "COFFER_CREDENTIALS_FILE": str(tmp_path / "credentials.json"),
        "COFFER_GATEWAY_ADDR": "127.0.0.1:0",
        "COFFER_STORE_ADDR": "127.0.0.1:0",
        "COFFER_KMS_ADDR": "127.0.0.1:0",
        "COFFER_ROTATION_ADDR": "127.0.0.1:0",
        "COFFER_ROTATION_POLL_SECONDS": "0.2",
        "COFFER_ROTATION_LEASE_SECONDS": "2",
        "COFFER_ROTATION_BACKOFF_BASE_SECONDS": "0.05",
        "COFFER_ROTATION_MAX_TRIES": "3",
        "COFFER_ROTATION_WORKERS": "2",
        "COFFER_ROTATION_STREAM_PREFIX": f"test:{uuid.uuid4().hex[:8]}",
    }
    ensure_root_key(Path(env["COFFER_ROOT_KEY_FILE"]))
    closers: list[Callable[[], Any]] = []
    try:
        kms = await serve_kms(Settings.from_env(env))
        closers.append(kms.aclose)
        env["COFFER_KMS_ADDR"] = f"127.0.0.1:{kms.port}"
        store = await serve_store(Settings.from_env(env))
        closers.append(store.aclose)
        env["COFFER_STORE_ADDR"] = f"127.0.0.1:{store.port}"
        credentials_file = Path(env["COFFER_CREDENTIALS_FILE"])
        admin = create_credential(credentials_file, principal="user/admin")
        env["COFFER_ROTATION_TOKEN"] = create_credential(credentials_file, principal="service/rotation")
        gateway = await serve_gateway(Settings.from_env(env))
        closers.append(lambda: gateway.aclose(grace=0.5))
        env["COFFER_GATEWAY_ADDR"] = f"127.0.0.1:{gateway.port}"
    except BaseException:
        for close in reversed(closers):
            await close()
        raise
    endpoint = env["COFFER_GATEWAY_ADDR"]
    client = AsyncCofferClient(endpoint, pki_dir / "ca.crt", admin, server_name="gateway")
    return Stack(env, client, endpoint, pki_dir / "ca.crt", admin, closers)


@pytest.fixture
async def stack(tmp_path: Path, pki_dir: Path, database_url: str, redis_url: str) -> AsyncIterator[Stack]:
    s = await _start(tmp_path, pki_dir, database_url, redis_url)
    try:
        yield s
    finally:
        await s.stop_rotation()
        await s.client.close()
        for close in reversed(s.closers):
            await close()

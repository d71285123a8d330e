"""The rotation service process's runtime: Redis checked at start, mTLS health for the operator only, graceful
stop. (Its real work — schedules, workers, rotators — is a later issue.)"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coffer.core import errors
from coffer.embedded import free_port
from coffer.rotation.__main__ import serve
from coffer.rpc.tls import TlsFiles, channel_credentials, name_options, service_host
from coffer.settings import Settings

pytestmark = pytest.mark.integration


def settings_for(pki_dir: Path, redis_url: str) -> Settings:
    return Settings.from_env(
        {
            "COFFER_HOME": str(pki_dir.parent),
            "COFFER_PKI_DIR": str(pki_dir),
            "COFFER_REDIS_URL": redis_url,
            "COFFER_ROTATION_ADDR": "127.0.0.1:0",
            "COFFER_STORE_ADDR": f"127.0.0.1:{free_port()}",
        }
    )


async def health(port: int, pki_dir: Path, identity: str) -> int:
    creds = channel_credentials(TlsFiles.for_identity(pki_dir, identity))
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", creds, options=name_options(service_host("rotation"))
    ) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(reply.status)


async def test_serves_health_to_the_operator_only_and_stops(pki_dir: Path, redis_url: str) -> None:
    runtime = await serve(settings_for(pki_dir, redis_url))
    try:
        assert runtime.port > 0
        assert await health(runtime.port, pki_dir, "operator") == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health(runtime.port, pki_dir, "gateway")
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert await runtime.redis.ping()
    finally:
        await runtime.aclose(grace=1.0)
    with pytest.raises(grpc.aio.AioRpcError) as stopped:
        await health(runtime.port, pki_dir, "operator")
    assert stopped.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_unreachable_redis_fails_clearly_without_leaking_the_password(pki_dir: Path) -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    with pytest.raises(errors.Unavailable) as failed:
        await serve(settings_for(pki_dir, url))
    assert "is unreachable" in failed.value.message
    assert "s3cret-pw" not in failed.value.message
    assert f"127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}" in failed.value.message


async def test_missing_redis_url_is_named(pki_dir: Path) -> None:
    with pytest.raises(errors.Unavailable, match="COFFER_REDIS_URL"):
        await serve(settings_for(pki_dir, ""))


async def test_a_malformed_sentinel_url_is_named_without_its_password(pki_dir: Path) -> None:
    with pytest.raises(errors.Unavailable) as failed:
        await serve(settings_for(pki_dir, "redis+sentinel://:s3cret-pw@127.0.0.1:26379"))
    assert "COFFER_REDIS_URL" in failed.value.message and "master-name" in failed.value.message
    assert "s3cret-pw" not in failed.value.message

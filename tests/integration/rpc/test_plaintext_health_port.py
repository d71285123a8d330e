"""``start_server(health_bind=...)`` (``COFFER_HEALTH_ADDR``): the health service alone on a plaintext port,
for probes that cannot speak TLS; ``python -m coffer.healthprobe`` asks it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from coffer import healthprobe
from coffer.rpc.server import PeerPolicy, start_server
from coffer.rpc.tls import TlsFiles
from coffer.settings import connect_address


async def test_health_port_serves_health_only_and_follows_the_server(pki_dir: Path) -> None:
    running = await start_server(
        service="store",
        bind="127.0.0.1:0",
        tls=TlsFiles.for_identity(pki_dir, "store"),
        register=lambda server: (),
        peers=PeerPolicy(default=frozenset({"gateway"})),
        health_bind="127.0.0.1:0",
    )
    assert running.health_port is not None and running.health_port != running.port
    address = f"127.0.0.1:{running.health_port}"
    try:
        assert await asyncio.to_thread(healthprobe.probe, address) == "SERVING"
        # The TLS port does not answer plaintext, and the plaintext port serves nothing but health.
        assert (await asyncio.to_thread(healthprobe.probe, f"127.0.0.1:{running.port}")).startswith(
            "UNAVAILABLE"
        )
        async with grpc.aio.insecure_channel(address) as channel:
            other = channel.unary_unary("/coffer.api.store.v1.StoreService/GetSecretValue")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await other(b"", timeout=2)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "coffer.healthprobe", f"0.0.0.0:{running.health_port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (proc.returncode, proc.stdout.strip()) == (0, "SERVING")
        await running.health.enter_graceful_shutdown()
        assert await asyncio.to_thread(healthprobe.main, [address]) == 1
    finally:
        await running.stop(grace=0.5)
    assert (await asyncio.to_thread(healthprobe.probe, address, timeout=1)).startswith(
        ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    )


async def test_no_health_port_unless_asked(pki_dir: Path) -> None:
    running = await start_server(
        service="store",
        bind="127.0.0.1:0",
        tls=TlsFiles.for_identity(pki_dir, "store"),
        register=lambda server: (),
        peers=PeerPolicy(default=frozenset({"gateway"})),
    )
    try:
        assert running.health_server is None and running.health_port is None
    finally:
        await running.stop(grace=0.5)


def test_healthprobe_needs_an_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COFFER_HEALTH_ADDR", raising=False)
    assert healthprobe.main([]) == 2
    assert connect_address("0.0.0.0:7480") == "127.0.0.1:7480"
    assert connect_address("[::]:7480") == "[::1]:7480"
    assert connect_address("store:7480") == "store:7480"

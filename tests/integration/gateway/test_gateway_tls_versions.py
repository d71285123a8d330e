"""What the public port accepts, as the README states it: TLS 1.3, and TLS 1.2 with ECDHE + AES-GCM suites
only. TLS 1.2 with CBC suites (even with ECDHE) and TLS 1.1 or older are refused."""

from __future__ import annotations

import asyncio
import socket
import ssl
import warnings
from typing import Any

import pytest

from coffer.rpc.tls import GATEWAY_HOST

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _handshake(port: int, ctx: ssl.SSLContext) -> tuple[str | None, str | None]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=GATEWAY_HOST) as tls,
    ):
        cipher = tls.cipher()
        return tls.version(), cipher[0] if cipher else None


def _client(gw: Any, version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(gw.ca_file))
    ctx.set_alpn_protocols(["h2"])
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


async def test_accepted_versions_and_suites(lone_gateway: Any) -> None:
    port = lone_gateway.runtime.port
    version, _ = await asyncio.to_thread(_handshake, port, _client(lone_gateway, ssl.TLSVersion.TLSv1_3))
    assert version == "TLSv1.3"
    version, cipher = await asyncio.to_thread(
        _handshake, port, _client(lone_gateway, ssl.TLSVersion.TLSv1_2, "ECDHE+AESGCM")
    )
    assert version == "TLSv1.2" and cipher is not None and cipher.startswith("ECDHE") and "GCM" in cipher


async def test_tls12_cbc_suites_are_refused(lone_gateway: Any) -> None:
    ctx = _client(lone_gateway, ssl.TLSVersion.TLSv1_2, "ECDHE+AES+SHA1:ECDHE+AES+SHA256:ECDHE+AES+SHA384")
    assert ctx.get_ciphers() and all(
        "GCM" not in c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"
    )
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await asyncio.to_thread(_handshake, lone_gateway.runtime.port, ctx)


async def test_tls11_is_refused(lone_gateway: Any) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # offering TLS 1.1 is the point
            ctx = _client(lone_gateway, ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pytest.skip("this OpenSSL cannot offer TLS 1.1")
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as info:
        await asyncio.to_thread(_handshake, lone_gateway.runtime.port, ctx)
    if "NO_PROTOCOLS_AVAILABLE" in str(info.value) or "no protocols available" in str(info.value):
        pytest.skip("this OpenSSL cannot offer TLS 1.1 (refused on the client side)")

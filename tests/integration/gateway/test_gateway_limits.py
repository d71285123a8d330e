"""Cheap denial of service against the public port, now refused: oversized requests (RESOURCE_EXHAUSTED before
anything is parsed or logged), oversized fields (a bounded AWS error message, a bounded log), and more
concurrent streams on one connection than the port allows (refused by HTTP/2)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import structlog

from coffer import logs
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.api.secrets.v1 import secrets_pb2_grpc
from coffer.client.aio import AsyncCofferClient
from coffer.gateway.__main__ import MAX_REQUEST_BYTES, MAX_STREAMS_PER_CONNECTION
from coffer.rpc.status import MAX_MESSAGE_BYTES, error_info_of
from coffer.rpc.tls import GATEWAY_HOST, name_options

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FOUR_MB = 4 * 1024 * 1024


@pytest.fixture
def service_logging() -> Iterator[None]:
    """The services' own log pipeline (redaction, size caps, JSON) for the in-process stack, on stdout."""
    previous = structlog.get_config()
    structlog.configure(processors=logs.pipeline(), cache_logger_on_first_use=False)
    try:
        yield
    finally:
        structlog.configure(**previous)


def _channel(gw: Any, *, signed: bool = True) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(root_certificates=gw.ca_file.read_bytes())
    return grpc.aio.secure_channel(
        gw.endpoint,
        creds,
        options=[("grpc.max_send_message_length", -1), *name_options(GATEWAY_HOST)],
        interceptors=[gw.signer()] if signed else None,
    )


async def test_ten_4mb_requests_are_refused_early_and_the_log_stays_small(
    stack: Any, capfd: pytest.CaptureFixture[str], service_logging: None
) -> None:
    metadata: tuple[tuple[str, str], ...] = ()  # the channel signs each call
    capfd.readouterr()
    async with _channel(stack) as channel:
        stub = secrets_pb2_grpc.SecretsManagerServiceStub(channel)
        for i in range(10):
            request = sm.CreateSecretRequest(
                name=f"big/{i}", description="d" * FOUR_MB, client_request_token=str(uuid.uuid4())
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.CreateSecret(request, metadata=metadata, timeout=30)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The connection is still usable for a normal call.
        await stub.GetRandomPassword(sm.GetRandomPasswordRequest(), metadata=metadata, timeout=10)
    out, err = capfd.readouterr()
    assert len(out) + len(err) < 64 * 1024


async def test_oversized_fields_get_a_bounded_aws_message_and_a_bounded_log(
    stack: Any, capfd: pytest.CaptureFixture[str], service_logging: None
) -> None:
    metadata: tuple[tuple[str, str], ...] = ()  # the channel signs each call
    near_limit = MAX_REQUEST_BYTES - 4096
    requests = {
        "description": sm.CreateSecretRequest(name="big/d", description="é" * (near_limit // 2)),
        "name": sm.CreateSecretRequest(name="n" * near_limit),
        "secretId": sm.DescribeSecretRequest(secret_id="s" * near_limit),
    }
    capfd.readouterr()
    async with _channel(stack) as channel:
        stub = secrets_pb2_grpc.SecretsManagerServiceStub(channel)
        for member, request in requests.items():
            call = stub.DescribeSecret if member == "secretId" else stub.CreateSecret
            for _ in range(10):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(request, metadata=metadata, timeout=10)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
                reason = error_info_of(info.value)
                assert reason is not None and reason.reason == "ValidationException"
                details = info.value.details() or ""
                assert details.startswith("1 validation error detected: Value '")
                assert f"at '{member}'" in details or "(truncated)" in details
                assert len(details.encode()) <= MAX_MESSAGE_BYTES
    out, err = capfd.readouterr()
    # 30 refused calls, each a few bounded log lines: far less than one of the requests.
    assert len(out) + len(err) < 30 * 3 * 4096


async def test_a_secret_value_over_64_kib_is_refused(stack: Any) -> None:
    metadata: tuple[tuple[str, str], ...] = ()  # the channel signs each call
    async with _channel(stack) as channel:
        stub = secrets_pb2_grpc.SecretsManagerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CreateSecret(
                sm.CreateSecretRequest(
                    name="v", secret_binary=b"b" * 65537, client_request_token=str(uuid.uuid4())
                ),
                metadata=metadata,
                timeout=10,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Member must have length less than or equal to 65536" in (info.value.details() or "")


async def test_an_unauthenticated_oversized_request_is_refused_before_authentication(
    lone_gateway: Any,
) -> None:
    async with _channel(lone_gateway, signed=False) as channel:
        stub = secrets_pb2_grpc.SecretsManagerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CreateSecret(sm.CreateSecretRequest(name="x", description="d" * FOUR_MB), timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- HTTP/2 streams on one connection (raw frames: the grpc client would queue, not send, the extra ones) ---

_SETTINGS, _HEADERS, _RST_STREAM, _GOAWAY = 0x4, 0x1, 0x3, 0x7
_MAX_CONCURRENT_STREAMS = 0x3
_REFUSED_STREAM = 0x7


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _literal(name: str, value: str) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman (short strings only)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def _read_frame(tls: ssl.SSLSocket) -> tuple[int, int, int, bytes]:
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = tls.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    head = exactly(9)
    length = int.from_bytes(head[:3], "big")
    return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, exactly(length)


def _open_streams(port: int, ca_file: str, count: int) -> tuple[int | None, set[int]]:
    """Open ``count`` calls on one connection without sending their messages; return the server's
    advertised stream limit and the streams it refused."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname=GATEWAY_HOST) as tls,
    ):
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(_SETTINGS, 0, 0))
        advertised = None
        while advertised is None:
            kind, flags, _stream, payload = _read_frame(tls)
            if kind == _SETTINGS and not flags & 0x1:
                for i in range(0, len(payload), 6):
                    key, value = struct.unpack(">HI", payload[i : i + 6])
                    if key == _MAX_CONCURRENT_STREAMS:
                        advertised = value
                tls.sendall(_frame(_SETTINGS, 0x1, 0))  # ACK
                if advertised is None:
                    break
        block = b"".join(
            _literal(k, v)
            for k, v in (
                (":method", "POST"),
                (":scheme", "https"),
                (":path", "/coffer.api.secrets.v1.SecretsManagerService/GetRandomPassword"),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            )
        )
        tls.sendall(b"".join(_frame(_HEADERS, 0x4, 2 * i + 1, block) for i in range(count)))
        refused: set[int] = set()
        tls.settimeout(3)
        try:
            while True:
                kind, _flags, stream, payload = _read_frame(tls)
                if kind == _RST_STREAM and int.from_bytes(payload[:4], "big") == _REFUSED_STREAM:
                    refused.add(stream)
                if kind == _GOAWAY:
                    break
        except (TimeoutError, ConnectionError, ssl.SSLError):
            pass
        return advertised, refused


async def test_more_streams_than_allowed_on_one_connection_are_refused(lone_gateway: Any) -> None:
    extra = 5
    advertised, refused = await asyncio.to_thread(
        _open_streams,
        lone_gateway.runtime.port,
        str(lone_gateway.ca_file),
        MAX_STREAMS_PER_CONNECTION + extra,
    )
    assert advertised == MAX_STREAMS_PER_CONNECTION
    last_allowed = 2 * MAX_STREAMS_PER_CONNECTION - 1
    assert refused, "no stream was refused"
    assert all(stream > last_allowed for stream in refused)


async def test_a_burst_above_a_hundred_calls_on_one_connection_is_served(stack: Any) -> None:
    """The stream limit bounds a connection without failing a client's ordinary burst: with 100 streams per
    connection grpc's server refused (REFUSED_STREAM) a few of 150 concurrent calls on one channel."""
    client = AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials)
    try:
        await client.create_secret(name="burst/one", secret_string="v")
        results = await asyncio.gather(
            *(client.get_secret_value(secret_id="burst/one") for _ in range(300)), return_exceptions=True
        )
    finally:
        await client.close()
    assert [r for r in results if isinstance(r, BaseException)] == []

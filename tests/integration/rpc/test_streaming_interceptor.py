"""The server interceptor admits streaming calls exactly as unary ones: a real TLS server built by
``start_server`` with a test-only service (grpc generic handlers, raw bytes, no proto) whose methods cover
every handler kind. A peer whose certificate CN the policy does not allow is refused on each kind; an allowed
peer is served with its principal bound; an error raised inside a streaming handler is mapped by
``coffer.rpc.status``; the health service's Watch refuses whoever Check refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coffer.core import errors
from coffer.rpc import context as ctx
from coffer.rpc.server import PeerPolicy, RunningServer, start_server
from coffer.rpc.status import error_info_of
from coffer.rpc.tls import TlsFiles, channel_credentials, name_options, service_host

SERVICE = "coffer.test.v1.Echo"
ALLOWED = "gateway"


def _boom(kind: bytes) -> Exception:
    if kind == b"not-found":
        return errors.NotFound("No such echo.")
    if kind == b"reset":
        return ConnectionResetError(104, "Connection reset by peer")
    return RuntimeError("a bug")


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _server_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield (ctx.current_principal() or "").encode()
    for _ in range(2):
        yield request


async def _server_stream_writer(request: bytes, context: grpc.aio.ServicerContext) -> None:
    """The reader/writer style (a coroutine that writes), as the health service's Watch is written."""
    await context.write((ctx.current_principal() or "").encode())
    await context.write(request)


async def _client_stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    return b"+".join([r async for r in requests])


async def _bidi(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request.upper()


async def _failing_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    raise _boom(request)


async def _failing_client_stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    async for request in requests:
        raise _boom(request)
    return b""


async def _failing_bidi(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    async for request in requests:
        yield b"first"
        raise _boom(request)


def _register(server: grpc.aio.Server) -> list[str]:
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "ServerStreamWriter": grpc.unary_stream_rpc_method_handler(_server_stream_writer),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
        "FailingServerStream": grpc.unary_stream_rpc_method_handler(_failing_stream),
        "FailingClientStream": grpc.stream_unary_rpc_method_handler(_failing_client_stream),
        "FailingBidi": grpc.stream_stream_rpc_method_handler(_failing_bidi),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    return [SERVICE]


@pytest.fixture
async def echo_server(pki_dir: Path) -> AsyncIterator[RunningServer]:
    running = await start_server(
        service="echo",
        bind="127.0.0.1:0",
        tls=TlsFiles.for_identity(pki_dir, "store"),
        register=_register,
        peers=PeerPolicy(default=frozenset({ALLOWED})),
    )
    yield running
    await running.stop(0)


@pytest.fixture
async def connect(
    pki_dir: Path, echo_server: RunningServer
) -> AsyncIterator[Callable[[str], grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []

    def open_as(identity: str) -> grpc.aio.Channel:
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{echo_server.port}",
            channel_credentials(TlsFiles.for_identity(pki_dir, identity)),
            options=name_options(service_host("store")),
        )
        channels.append(channel)
        return channel

    yield open_as
    for channel in channels:
        await channel.close()


async def _requests(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def _call(channel: grpc.aio.Channel, method: str, *payload: bytes) -> list[bytes]:
    """Call ``method`` with the stub shape its name implies; return every response message."""
    path = f"/{SERVICE}/{method}"
    if method in ("Unary",):
        return [await channel.unary_unary(path)(payload[0], timeout=10)]
    if method.endswith("ClientStream"):
        return [await channel.stream_unary(path)(_requests(*payload), timeout=10)]
    if method.endswith("ServerStream") or method == "ServerStreamWriter":
        return [m async for m in channel.unary_stream(path)(payload[0], timeout=10)]
    return [m async for m in channel.stream_stream(path)(_requests(*payload), timeout=10)]


KINDS = ["Unary", "ServerStream", "ServerStreamWriter", "ClientStream", "Bidi"]


@pytest.mark.parametrize("method", KINDS)
@pytest.mark.parametrize("identity", ["store", "rotation", "operator"])
async def test_a_peer_the_policy_does_not_allow_is_refused_on_every_handler_kind(
    connect: Callable[[str], grpc.aio.Channel], method: str, identity: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(connect(identity), method, b"hello")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"Service identity {identity} may not call /{SERVICE}/{method}" in (info.value.details() or "")
    error_info = error_info_of(info.value)
    assert error_info is not None and error_info.reason == "AccessDeniedException"


async def test_an_allowed_peer_is_served_on_every_handler_kind_with_its_principal_bound(
    connect: Callable[[str], grpc.aio.Channel],
) -> None:
    channel = connect(ALLOWED)
    assert await _call(channel, "Unary", b"hi") == [b"hi"]
    assert await _call(channel, "ServerStream", b"hi") == [b"service/gateway", b"hi", b"hi"]
    assert await _call(channel, "ServerStreamWriter", b"hi") == [b"service/gateway", b"hi"]
    assert await _call(channel, "ClientStream", b"a", b"b", b"c") == [b"a+b+c"]
    assert await _call(channel, "Bidi", b"a", b"b") == [b"A", b"B"]


@pytest.mark.parametrize("method", ["FailingServerStream", "FailingClientStream", "FailingBidi"])
@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"not-found", grpc.StatusCode.NOT_FOUND, "ResourceNotFoundException"),
        (b"reset", grpc.StatusCode.UNAVAILABLE, "ServiceUnavailable"),
        (b"bug", grpc.StatusCode.INTERNAL, "InternalServiceError"),
    ],
)
async def test_an_error_inside_a_streaming_handler_is_mapped_by_the_one_status_mapping(
    connect: Callable[[str], grpc.aio.Channel],
    method: str,
    payload: bytes,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(connect(ALLOWED), method, payload)
    assert info.value.code() == code
    error_info = error_info_of(info.value)
    assert error_info is not None and error_info.reason == reason
    if code == grpc.StatusCode.INTERNAL:
        assert "a bug" not in (info.value.details() or "")  # a bug's own text stays in the server's log


async def test_health_watch_is_refused_to_a_peer_that_check_refuses(
    connect: Callable[[str], grpc.aio.Channel],
) -> None:
    stub = health_pb2_grpc.HealthStub(connect("rotation"))
    with pytest.raises(grpc.aio.AioRpcError) as check:
        await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
    assert check.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as watch:
        async for _ in stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10):
            pass
    assert watch.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("identity", ["operator", ALLOWED])
async def test_health_check_and_watch_serve_the_operator_and_allowed_peers(
    connect: Callable[[str], grpc.aio.Channel], identity: str
) -> None:
    stub = health_pb2_grpc.HealthStub(connect(identity))
    checked = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    watch: Any = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()

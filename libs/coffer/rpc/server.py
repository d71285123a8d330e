"""Building and running a Coffer gRPC server: TLS, the standard health service, one interceptor that binds
the request context, checks which peers may call which method, maps errors (via ``coffer.rpc.status``) and
logs each call; graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from coffer import logs
from coffer.core import errors
from coffer.rpc import context as ctx
from coffer.rpc.status import to_status
from coffer.rpc.tls import TlsFiles, server_credentials
from coffer.settings import Settings

log = structlog.get_logger("coffer.rpc")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
#: Operators (``coffer status``, the ``make run`` supervisor) may ask any service for its health.
OPERATOR_IDENTITY = "operator"

Authenticator = Callable[[grpc.aio.ServicerContext, str], Awaitable[str]]
"""Given the call context and the full method name, return the caller's principal or raise
``errors.Unauthenticated`` (used by the public gateway, whose callers present bearer credentials)."""


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """Which mTLS identities (certificate CNs) may call which methods. ``default`` applies to methods not
    listed in ``per_method`` (full method names such as ``/coffer.api.kms.v1.KeyManagementService/Decrypt``).
    ``forwarders`` are identities trusted to pass the end caller's principal in ``x-coffer-principal``."""

    default: frozenset[str]
    per_method: Mapping[str, frozenset[str]] = field(default_factory=dict)
    forwarders: frozenset[str] = frozenset()

    def allows(self, method: str, identity: str | None) -> bool:
        if identity is None:
            return False
        if method.startswith(HEALTH_PREFIX) and identity == OPERATOR_IDENTITY:
            return True
        return identity in self.per_method.get(method, self.default)


def _peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else None


class IssuerCheck:
    """When a server trusts other deployments' CAs (cross-region replication), a certificate's CN alone
    proves nothing: another region's CA can sign a certificate named ``gateway``. This check accepts an
    identity only if its certificate was issued by the CA that may vouch for it: ``foreign[identity]`` for
    the other regions' identities, our own CA for every other identity."""

    _CACHE_MAX = 1024

    def __init__(self, *, own_ca: Path, foreign: Mapping[str, Path]) -> None:
        self._own = x509.load_pem_x509_certificate(own_ca.read_bytes())
        self._foreign = {
            identity: x509.load_pem_x509_certificate(path.read_bytes()) for identity, path in foreign.items()
        }
        self._verified: dict[bytes, str] = {}

    def check(self, context: grpc.aio.ServicerContext, identity: str) -> None:
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            raise errors.AccessDenied(f"Service identity {identity} presented no certificate.")
        pem: bytes = pems[0]
        if self._verified.get(pem) == identity:
            return
        issuer = self._foreign.get(identity, self._own)
        cert = x509.load_pem_x509_certificate(pem)
        try:
            if cert.issuer != issuer.subject:
                raise InvalidSignature("issuer name differs")
            cert.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError):
            raise errors.AccessDenied(
                f"Service identity {identity} was not issued by the certificate authority trusted for it."
            ) from None
        if len(self._verified) >= self._CACHE_MAX:
            self._verified.clear()
        self._verified[pem] = identity


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            out[key] = value
    return out


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        *,
        service: str,
        peers: PeerPolicy | None,
        authenticator: Authenticator | None,
        issuers: IssuerCheck | None = None,
    ) -> None:
        self._service = service
        self._peers = peers
        self._authenticator = authenticator
        self._issuers = issuers

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method: str = handler_call_details.method
        behavior = handler.unary_unary
        service = self._service
        peers = self._peers
        authenticator = self._authenticator
        issuers = self._issuers

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            md = _metadata(context)
            request_id = md.get(ctx.REQUEST_ID_HEADER) or uuid.uuid4().hex
            started = time.perf_counter()
            rid_token = ctx.request_id_var.set(request_id)
            tokens: list[Any] = []
            structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
            try:
                try:
                    if peers is not None:
                        identity = _peer_identity(context)
                        if not peers.allows(method, identity):
                            raise errors.AccessDenied(
                                f"Service identity {identity or '(none)'} may not call {method} on {service}."
                            )
                        if issuers is not None and identity is not None:
                            issuers.check(context, identity)
                        tokens.append(ctx.peer_var.set(identity))
                        if identity in peers.forwarders and ctx.PRINCIPAL_HEADER in md:
                            tokens.append(ctx.principal_var.set(md[ctx.PRINCIPAL_HEADER]))
                        elif identity is not None:
                            tokens.append(ctx.principal_var.set(f"service/{identity}"))
                    if authenticator is not None and not method.startswith(HEALTH_PREFIX):
                        principal = await authenticator(context, method)
                        tokens.append(ctx.principal_var.set(principal))
                    structlog.contextvars.bind_contextvars(principal=ctx.current_principal())
                    response = await behavior(request, context)
                except errors.CofferError as exc:
                    log.info(
                        "rpc.error",
                        code=exc.code,
                        error=exc.message,
                        ms=round((time.perf_counter() - started) * 1000, 3),
                    )
                    code, message, trailers = to_status(exc)
                    await context.abort(code, message, trailing_metadata=trailers)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:
                    log.exception("rpc.internal_error", error_type=type(exc).__name__)
                    code, message, trailers = to_status(exc)
                    await context.abort(code, message, trailing_metadata=trailers)
                log.debug("rpc.ok", ms=round((time.perf_counter() - started) * 1000, 3))
                return response
            finally:
                structlog.contextvars.unbind_contextvars("request_id", "method", "principal")
                for token in reversed(tokens):
                    token.var.reset(token)
                ctx.request_id_var.reset(rid_token)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]

    async def stop(self, grace: float = 5.0) -> None:
        log.info("server.stopping", port=self.port)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        log.info("server.stopped", port=self.port)


async def start_server(
    *,
    service: str,
    bind: str,
    tls: TlsFiles,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    peers: PeerPolicy | None,
    authenticator: Authenticator | None = None,
    require_client_cert: bool = True,
    options: Iterable[tuple[str, Any]] = (),
    foreign_identities: Mapping[str, Path] | None = None,
) -> RunningServer:
    """Start a TLS gRPC server. ``register`` adds the servicers and returns their full service names, which
    the health service reports SERVING. ``bind`` may use port 0; the bound port is returned.

    ``foreign_identities`` (identity -> CA file) lets other deployments' CAs vouch for those identities only
    (e.g. ``replicator.local-2`` by local-2's CA): their CAs join the client-CA bundle, and every caller's
    certificate must then be issued by the CA trusted for its identity (ours for all the others)."""
    issuers = IssuerCheck(own_ca=tls.ca, foreign=foreign_identities) if foreign_identities and peers else None
    server = grpc.aio.server(
        interceptors=[
            CallInterceptor(service=service, peers=peers, authenticator=authenticator, issuers=issuers)
        ],
        options=[("grpc.so_reuseport", 0), *options],
    )
    names = tuple(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    credentials = server_credentials(
        tls,
        require_client_cert=require_client_cert,
        extra_client_cas=tuple((foreign_identities or {}).values()),
    )
    port = server.add_secure_port(bind, credentials)
    if port == 0:
        raise OSError(f"{service}: could not bind {bind}")
    await server.start()
    for name in (*names, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("server.started", service=service, port=port)
    return RunningServer(server=server, port=port, health=health_servicer, service_names=names)


async def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


class ServiceRuntime(Protocol):
    async def aclose(self) -> None: ...


def service_main(
    service: str,
    serve: Callable[[Settings], Awaitable[ServiceRuntime]],
    *,
    startup_errors: tuple[type[BaseException], ...] = (),
) -> None:
    """The body of every ``python -m coffer.<service>``: settings from the environment, JSON logs, ``serve``,
    then run until SIGTERM/SIGINT and close gracefully. A start-up failure (a CofferError, an unusable address
    or one of ``startup_errors``) is logged and printed, and the process exits 1."""
    settings = Settings.from_env()
    logs.configure(service=service, level=settings.log_level, log_file=settings.log_file)

    caught: tuple[type[BaseException], ...] = (errors.CofferError, OSError, *startup_errors)

    async def run() -> None:
        try:
            runtime = await serve(settings)
        except caught as exc:
            message = exc.message if isinstance(exc, errors.CofferError) else str(exc)
            log.error(f"{service}.start_failed", error=message)
            print(f"{service}: {message}", file=sys.stderr)
            raise SystemExit(1) from None
        try:
            await wait_for_signal()
            log.info(f"{service}.stopping")
        finally:
            await runtime.aclose()
        log.info(f"{service}.stopped")

    run_service(run)


def run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a service's async main on uvloop when available."""
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        asyncio.run(main())

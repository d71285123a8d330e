"""Building and running a Coffer gRPC server: TLS, the standard health service, one interceptor that binds
the request context, checks which peers may call which method and on whose behalf (verified principal
assertions), maps errors (via ``coffer.rpc.status``), logs each call and, on internal services, writes one
audit line per call; graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import signal
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import grpc
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from coffer import logs
from coffer.audit import AuditSink, Outcome
from coffer.audit_trail import PublicAudit, call_event
from coffer.core import errors
from coffer.core.principal import Principal
from coffer.metrics import MetricsServer, observe_rpc, start_metrics_server
from coffer.rpc import context as ctx
from coffer.rpc.assertions import Claims, PrincipalVerifier
from coffer.rpc.status import classify, to_status
from coffer.rpc.tls import TlsFiles, server_credentials
from coffer.settings import Settings

log = structlog.get_logger("coffer.rpc")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
#: Operators (``coffer status``, the ``make run`` supervisor) may ask any service for its health.
OPERATOR_IDENTITY = "operator"

Authenticator = Callable[[grpc.aio.ServicerContext, str, Any], Awaitable[Principal]]
"""Given the call context, the full method name and the request message (None for a client-streaming call:
an authenticator that needs the request must then refuse), return the caller or raise
``errors.Unauthenticated`` (used by the public gateway, whose callers sign each request with an access key).
"""

CallerResolver = Callable[[str, "str | None"], Awaitable["Principal | None"]]
"""Given the principal a verified assertion names and its access key id, return the caller's Principal (or
None to fall back to ``legacy_principal``), or raise to refuse the call (the store and the kms)."""


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """Which mTLS identities (certificate CNs) may call which methods. ``default`` applies to methods not
    listed in ``per_method`` (full method names such as ``/coffer.api.kms.v1.KeyManagementService/Decrypt``).
    ``forwarders`` are the identities whose calls may carry an end caller's principal
    (``x-coffer-principal``), accepted only with a valid gateway-signed assertion (``coffer.rpc.assertions``);
    every other call runs as the caller's own identity, ``service/<identity>``."""

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


class _Call:
    """One call's state between admission and the end of the call (what to unbind, when it started)."""

    __slots__ = ("admitted", "metadata", "method", "peer", "published", "request", "started", "tokens")

    def __init__(
        self, method: str, metadata: dict[str, str], started: float, tokens: list[contextvars.Token[Any]]
    ) -> None:
        self.method = method
        self.metadata = metadata
        self.started = started
        self.tokens = tokens
        self.peer: str | None = None
        self.admitted = False
        self.request: Any = None
        #: Whether this call's public audit event was handed to the trail already (once per call).
        self.published = False


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


#: Server options every Coffer server starts from (``start_server``'s ``options`` override them). Coffer's own
#: channels ping every 30 s (``coffer.rpc.channel``) to notice a dead peer under a long-lived stream (the
#: key-change and rotation-request watches): a server must accept such pings while a stream is silent, or it
#: answers them with GOAWAY "too_many_pings" after two, dropping the stream and racing the calls on that
#: connection into UNAVAILABLE.
SERVER_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("grpc.so_reuseport", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
)


#: The handler kinds of grpc and the factory that rebuilds each around a wrapped behaviour.
_HANDLER_KINDS: tuple[tuple[str, Callable[..., grpc.RpcMethodHandler]], ...] = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps EVERY handler (unary and streaming, both directions) so that each call is admitted the same
    way: request id bound, peer identity checked against the policy (and its issuer), caller authenticated,
    errors mapped through ``coffer.rpc.status`` and the outcome logged (and audited, with ``audit``: health
    checks excepted). A method whose handler kind is not known is refused rather than served unchecked."""

    def __init__(
        self,
        *,
        service: str,
        peers: PeerPolicy | None,
        authenticator: Authenticator | None,
        issuers: IssuerCheck | None = None,
        assertions: PrincipalVerifier | None = None,
        audit: AuditSink | None = None,
        resolve_caller: CallerResolver | None = None,
        public_audit: PublicAudit | None = None,
    ) -> None:
        self._service = service
        self._resolve_caller = resolve_caller
        self._public = public_audit
        self._peers = peers
        self._authenticator = authenticator
        self._issuers = issuers
        self._assertions = assertions
        self._audit = audit
        # method -> (the registered handler, its wrapped form): registered handlers do not change, so each
        # is wrapped once instead of on every call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        for kind, factory in _HANDLER_KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                # A coroutine handler returns its response (or writes with context.write); an async
                # generator yields its responses. grpc tells them apart by the function's kind, so the
                # wrapper must be of the same kind.
                wrapped: Callable[..., Any] = (
                    self._wrap_generator(method, behavior)
                    if inspect.isasyncgenfunction(behavior)
                    else self._wrap_coroutine(method, behavior)
                )
                return factory(
                    wrapped,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        raise errors.Internal(f"{method} on {self._service} has a handler of no known kind.")

    def _wrap_coroutine(
        self, method: str, behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = self._open(method, context)
            try:
                call.request = request
                try:
                    await self._admit(call, context, request)
                    response = await behavior(request, context)
                    if self._public is not None:
                        # Fail closed: the event is stored before the response leaves.
                        await self._publish(call, response, None)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # every failure is mapped, logged and answered by _fail
                    await self._fail(call, context, exc)
                log.debug("rpc.ok", ms=_ms_since(call.started))
                self._record(call, "allowed")
                observe_rpc(self._service, method, "OK", call.started)
                return response
            finally:
                _close(call)

        return handle

    def _wrap_generator(
        self, method: str, behavior: Callable[[Any, grpc.aio.ServicerContext], AsyncGenerator[Any, None]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = self._open(method, context)
            try:
                try:
                    if isinstance(request, Message):
                        call.request = request
                    await self._admit(call, context, request if isinstance(request, Message) else None)
                    async with contextlib.aclosing(behavior(request, context)) as responses:
                        async for response in responses:
                            if self._public is not None and not call.published:
                                # A public stream is one call: recorded once, when its first response is
                                # ready (it was accepted), before that response leaves (fail closed).
                                await self._publish(call, None, None)
                            yield response
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # every failure is mapped, logged and answered by _fail
                    await self._fail(call, context, exc)
                log.debug("rpc.ok", ms=_ms_since(call.started))
                self._record(call, "allowed")
                observe_rpc(self._service, method, "OK", call.started)
            finally:
                _close(call)

        return handle

    def _open(self, method: str, context: grpc.aio.ServicerContext) -> _Call:
        """Bind the request id (the caller's, or a new one) and the method to this call's logs."""
        metadata = _metadata(context)
        request_id = metadata.get(ctx.REQUEST_ID_HEADER) or uuid.uuid4().hex
        call = _Call(method, metadata, time.perf_counter(), [ctx.request_id_var.set(request_id)])
        structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
        return call

    async def _admit(self, call: _Call, context: grpc.aio.ServicerContext, request: Any) -> None:
        """Check the peer and authenticate the caller; raise a CofferError to refuse the call."""
        method = call.method
        peers = self._peers
        if peers is not None:
            identity = _peer_identity(context)
            if not peers.allows(method, identity):
                raise errors.AccessDenied(
                    f"Service identity {identity or '(none)'} may not call {method} on {self._service}."
                )
            if self._issuers is not None and identity is not None:
                self._issuers.check(context, identity)
            call.peer = identity
            call.tokens.append(ctx.peer_var.set(identity))
            principal = f"service/{identity}"
            akid: str | None = None
            if identity in peers.forwarders:
                claims = self._claimed_principal(call)
                if claims is not None:
                    principal, akid = claims.principal, claims.access_key_id
            call.tokens.append(ctx.principal_var.set(principal))
            if self._resolve_caller is not None and not principal.startswith("service/"):
                caller = await self._resolve_caller(principal, akid)
                if caller is not None:
                    call.tokens.append(ctx.caller_var.set(caller))
        if self._authenticator is not None and not method.startswith(HEALTH_PREFIX):
            caller = await self._authenticator(context, method, request)
            call.tokens.append(ctx.principal_var.set(caller.arn))
            call.tokens.append(ctx.caller_var.set(caller))
        call.admitted = True
        structlog.contextvars.bind_contextvars(principal=ctx.current_principal())

    def _claimed_principal(self, call: _Call) -> Claims | None:
        """The end caller a forwarder calls for: none claimed, or the principal of a valid assertion (bound
        for this call's own calls to forward). A claim without one is refused, never taken on trust."""
        claimed = call.metadata.get(ctx.PRINCIPAL_HEADER)
        token = call.metadata.get(ctx.ASSERTION_HEADER)
        if claimed is None and token is None:
            return None
        if token is None or self._assertions is None:
            raise errors.AccessDenied(
                f"{self._service} accepts a caller's principal only with a valid principal assertion."
            )
        claims = self._assertions.verify_claims(token)
        if claimed is not None and claimed != claims.principal:
            raise errors.AccessDenied("The principal claimed differs from the principal assertion's.")
        call.tokens.append(ctx.assertion_var.set(token))
        if claims.access_key_id is not None:
            call.tokens.append(ctx.access_key_id_var.set(claims.access_key_id))
        # The end caller's address and user agent: trusted from a forwarder with a valid assertion only.
        source_ip = call.metadata.get(ctx.SOURCE_IP_HEADER)
        if source_ip:
            call.tokens.append(ctx.source_ip_var.set(source_ip))
        user_agent = call.metadata.get(ctx.USER_AGENT_HEADER)
        if user_agent:
            call.tokens.append(ctx.user_agent_var.set(user_agent))
        return claims

    def _record(self, call: _Call, outcome: Outcome, error_code: str | None = None) -> None:
        if self._audit is None or call.method.startswith(HEALTH_PREFIX):
            return
        self._audit.record(
            principal=ctx.current_principal() if call.admitted else None,
            peer=call.peer,
            action=call.method,
            resource="",
            outcome=outcome,
            request_id=ctx.current_request_id(),
            error_code=error_code,
        )

    async def _publish(self, call: _Call, response: Any, error: errors.CofferError | None) -> None:
        """Record a public call (a call from the gateway to a public service) in the audit trail, once;
        raise ``errors.Unavailable`` when the trail could not store it."""
        public = self._public
        if public is None or call.published:
            return
        source = public.source_of(call.method, call.peer, admitted=call.admitted)
        if source is None:
            return
        call.published = True
        event = call_event(
            event_source=source,
            event_name=call.method.rpartition("/")[2],
            region=public.region,
            caller=ctx.current_caller() if call.admitted else None,
            request=call.request,
            response=response,
            error=error,
        )
        try:
            await public.trail.record(event)
        except Exception as exc:
            log.warning("audit.trail_failed", event_id=event.event_id, error_type=type(exc).__name__)
            if not public.fail_closed:
                return
            if isinstance(exc, errors.CofferError):
                raise
            raise errors.Unavailable(
                "The audit trail could not be written; the call was not answered."
            ) from exc

    async def _fail(self, call: _Call, context: grpc.aio.ServicerContext, exc: Exception) -> NoReturn:
        """Log the failure (with its traceback unless it is a CofferError raised on purpose) and abort the
        call with the status ``coffer.rpc.status`` maps it to."""
        err = classify(exc)
        if err is exc:
            log.info("rpc.error", code=err.code, error=err.message, ms=_ms_since(call.started))
        elif isinstance(err, errors.Internal):
            log.exception("rpc.internal_error", error_type=type(exc).__name__)
        else:
            log.warning(
                "rpc.dependency_error",
                code=err.code,
                error_type=type(exc).__name__,
                ms=_ms_since(call.started),
                exc_info=exc,
            )
        if self._public is not None and not call.published:
            try:
                await self._publish(call, None, err)
            except errors.CofferError as audit_err:
                err = audit_err
        self._record(call, "failed" if call.admitted else "denied", err.code)
        code, message, trailers = to_status(err)
        observe_rpc(self._service, call.method, code.name, call.started)
        await context.abort(code, message, trailing_metadata=trailers)
        raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def _close(call: _Call) -> None:
    structlog.contextvars.unbind_contextvars("request_id", "method", "principal")
    try:
        for token in reversed(call.tokens):
            token.var.reset(token)
    except ValueError:
        # A streaming call abandoned by its client is finalized outside the call's own context, where its
        # tokens cannot be reset (nor need to be: that context ends with the call).
        pass


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    #: The plaintext health-only server (``health_bind``) and its port, when there is one.
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    #: The Prometheus endpoint (``metrics_bind``), when there is one.
    metrics: MetricsServer | None = None

    @property
    def metrics_port(self) -> int | None:
        return self.metrics.port if self.metrics is not None else None

    async def stop(self, grace: float = 5.0) -> None:
        log.info("server.stopping", port=self.port)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(None)
        if self.metrics is not None:
            await self.metrics.stop()
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
    maximum_concurrent_rpcs: int | None = None,
    foreign_identities: Mapping[str, Path] | None = None,
    assertions: PrincipalVerifier | None = None,
    audit: AuditSink | None = None,
    public_audit: PublicAudit | None = None,
    health_bind: str | None = None,
    resolve_caller: CallerResolver | None = None,
    metrics_bind: str | None = None,
) -> RunningServer:
    """Start a TLS gRPC server. ``register`` adds the servicers and returns their full service names, which
    the health service reports SERVING. ``bind`` may use port 0; the bound port is returned.

    ``foreign_identities`` (identity -> CA file) lets other deployments' CAs vouch for those identities only
    (e.g. ``replicator.local-2`` by local-2's CA): their CAs join the client-CA bundle, and every caller's
    certificate must then be issued by the CA trusted for its identity (ours for all the others).
    ``assertions`` verifies the principals that ``peers.forwarders`` claim; ``audit`` gets one line per
    call; ``public_audit`` stores one audit trail event per public call before its response leaves (a call
    whose event cannot be stored fails UNAVAILABLE). ``options`` are grpc server options (limits);
    ``maximum_concurrent_rpcs`` caps the calls in
    progress, a call beyond it being refused at once with RESOURCE_EXHAUSTED.

    ``health_bind`` (``COFFER_HEALTH_ADDR``): also serve the same health service, and nothing else, on a
    plaintext port there (for probes that cannot speak TLS, such as the kubelet's gRPC probe). It tells
    only whether the service is SERVING; every other method exists on the TLS port only.

    ``metrics_bind`` (``COFFER_METRICS_ADDR``): serve the process's Prometheus metrics there
    (``coffer.metrics``; plaintext HTTP, ``GET /metrics`` only)."""
    issuers = IssuerCheck(own_ca=tls.ca, foreign=foreign_identities) if foreign_identities and peers else None
    server = grpc.aio.server(
        interceptors=[
            CallInterceptor(
                service=service,
                peers=peers,
                authenticator=authenticator,
                issuers=issuers,
                assertions=assertions,
                audit=audit,
                resolve_caller=resolve_caller,
                public_audit=public_audit,
            )
        ],
        options=list({**dict(SERVER_DEFAULTS), **dict(options)}.items()),
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
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
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    if health_bind:
        health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)], maximum_concurrent_rpcs=16)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_port = health_server.add_insecure_port(health_bind)
        if health_port == 0:
            raise OSError(f"{service}: could not bind the health address {health_bind}")
    metrics = await start_metrics_server(service, metrics_bind) if metrics_bind else None
    try:
        await server.start()
        if health_server is not None:
            await health_server.start()
    except BaseException:
        if metrics is not None:
            await metrics.stop()
        raise
    for name in (*names, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "server.started",
        service=service,
        port=port,
        health_port=health_port,
        metrics_port=metrics.port if metrics is not None else None,
    )
    return RunningServer(
        server=server,
        port=port,
        health=health_servicer,
        service_names=names,
        health_server=health_server,
        health_port=health_port,
        metrics=metrics,
    )


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

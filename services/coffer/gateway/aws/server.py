"""The gateway's HTTPS endpoint for AWS's own protocols (issue 10): AWS JSON 1.1 (``X-Amz-Target:
secretsmanager.<Op>`` / ``TrentService.<Op>``) and STS's query protocol (form ``Action=<Op>``), signed with
SigV4, over TLS with the gateway's certificate.

Every request runs the same pipeline as a call on the gRPC public port (``coffer.rpc.server.CallInterceptor``
with ``coffer.gateway.auth.SignatureAuthenticator``), in this order:

1. a request id is bound (sent back as ``x-amzn-RequestId`` on every answer, errors included);
2. the protocol is checked: ``POST`` to the endpoint's path, a known content type, a bounded body
   (``MAX_REQUEST_BYTES``, as the gRPC port), a JSON object or a form, a known target or action — AWS's
   framework errors otherwise (``shared/docs/aws-wire.md`` §2);
3. the caller is authenticated: SigV4 parsed and checked (``coffer.crypto.sigv4``: clock skew, ``host``
   signed, the scope's region is the deployment's and its service the target's), the access key resolved in
   the gateway's ``DirectoryCache``, its session token and state checked by the one check both signature
   schemes share (``coffer.crypto.signing.check_key``), the signature recomputed with the key's secret;
4. the caller, its access key id, address and user agent are bound to the call's context
   (``coffer.rpc.context``): the assertion the gateway signs for the store and the kms carries them, so the
   audit events of AWS-protocol calls name the access key and the user agent;
5. the request runs through the same :class:`~coffer.gateway.servicer.Operation` as over gRPC (throttle,
   authorize, forward, audit: ``GatewayApp.call``), translated only at the edge (``jsonproto``, ``query``);
6. errors are mapped once (``coffer.rpc.status.to_http``; STS's XML through ``query.sts_error``); a request
   refused before it was admitted (authentication) is recorded in the audit trail like the gRPC port's
   (``PublicAudit`` with ``unadmitted_only``); everything bound is unbound.

Nothing is answered with a stack trace: an unexpected exception is logged with its traceback and answered
500 with a generic message.
"""

from __future__ import annotations

import contextvars
import json
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import structlog
from aiohttp import web
from google.protobuf.message import Message

from coffer import logs
from coffer.audit_trail import PublicAudit, call_event
from coffer.core import errors
from coffer.crypto import signing, sigv4
from coffer.gateway.aws import jsonproto, longpoll, query
from coffer.gateway.servicer import Operation
from coffer.httpsite import listen
from coffer.principal_directory import DirectoryCache
from coffer.rpc import context as ctx
from coffer.rpc.status import INTERNAL_HTTP_MESSAGE, classify, to_http
from coffer.rpc.tls import TlsFiles
from coffer.settings import split_address

log = logs.get_logger("coffer.gateway.aws")

#: As the gRPC public port (``coffer.gateway.__main__.MAX_REQUEST_BYTES``): a secret value is at most 64 KiB
#: and base64 makes a binary one 4/3 larger; the rest of the largest request is far smaller.
MAX_REQUEST_BYTES = 256 * 1024
#: Requests in progress at once; more are refused at once with ThrottlingException (every SDK retries it).
MAX_CONCURRENT_REQUESTS = 512
#: An idle keep-alive connection is closed after this long (botocore keeps its pool's connections open).
KEEPALIVE_SECONDS = 75.0
#: Request line and each header at most this long; at most this many headers (SigV4 headers are short:
#: ``Authorization`` ~250 bytes, a session token ~1 KiB).
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 64
#: The user agent kept for the audit trail (as the gRPC port).
MAX_USER_AGENT = 256

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
#: Also accepted for JSON requests (aws-wire.md §2: tolerate it).
JSON_CONTENT_TYPES = frozenset({JSON_CONTENT_TYPE, "application/x-amz-json-1.0", "application/json"})
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
XML_CONTENT_TYPE = "text/xml"
REQUEST_ID_HEADER = "x-amzn-RequestId"
QUERY_ERROR_HEADER = "x-amzn-query-error"
TARGET_HEADER = "x-amz-target"

#: ``X-Amz-Target`` prefix → the SigV4 service name its scope must carry (and its error conventions).
TARGET_SERVICES: Mapping[str, str] = {"secretsmanager": "secretsmanager", "TrentService": "kms"}
STS_SERVICE = "sts"
#: The error text of a key the store keeps no secret for (created before the AWS-protocol endpoint).
NO_SECRET_MESSAGE = (
    "This access key was created before Coffer kept access-key secrets for SigV4, so it cannot sign "
    "AWS-protocol requests (it still works with the Coffer SDK and CLI). Create a new access key "
    "(`coffer iam create-access-key`) and use it."
)


class ProtocolError(Exception):
    """A request AWS refuses at the protocol level, before authentication (aws-wire.md §2)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(slots=True)
class _Parsed:
    """What the request asks for, known before its caller is: the service (SigV4 scope), the operation and
    its request message (or the error converting it, answered once the caller is authenticated)."""

    service: str
    operation: Operation | None = None
    message: Message | None = None
    deferred: errors.CofferError | None = None
    method: str = ""
    #: A long poll over a stream (WatchSecrets): ``message`` is its poll request.
    poll: bool = False


@dataclass(slots=True)
class _Call:
    request_id: str
    started: float
    tokens: list[contextvars.Token[Any]] = field(default_factory=list)
    admitted: bool = False


def _json_body(code: str, message: str, *, service: str) -> bytes:
    """AWS JSON 1.1's error body. ``message`` in lower case: AWS's framework errors, KMS's modelled errors and
    botocore (which prefers it) all use it; Secrets Manager's modelled errors declare the member ``Message``
    and AWS sends that spelling for them, so those carry both (same text) for SDKs that read the modelled
    member strictly."""
    body: dict[str, str] = {"__type": code, "message": message}
    if service == "secretsmanager":
        body["Message"] = message
    return json.dumps(body).encode()


class AwsEndpoint:
    """The aiohttp request handler of the AWS-protocol endpoint (see the module docstring)."""

    def __init__(
        self,
        *,
        operations: Mapping[str, Operation],
        directory: DirectoryCache,
        region: str,
        public_audit: PublicAudit | None,
        path: str = "/",
        clock: Callable[[], float] = time.time,
        max_concurrent: int = MAX_CONCURRENT_REQUESTS,
    ) -> None:
        self._operations = operations
        self._directory = directory
        self._region = region
        self._public = public_audit
        self._paths = frozenset({"/", path.rstrip("/") or "/"})
        self._clock = clock
        self._max = max_concurrent
        self._in_progress = 0
        self._targets = {
            target: operations[method] for target, method in jsonproto.TARGETS.items() if method in operations
        }
        self._polls = {
            target: operations[method]
            for target, method in longpoll.LONG_POLLS.items()
            if method in operations
        }

    # -- the request --------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        call = _Call(request_id=str(uuid.uuid4()), started=time.perf_counter())
        call.tokens.append(ctx.request_id_var.set(call.request_id))
        structlog.contextvars.bind_contextvars(request_id=call.request_id, method=f"aws:{request.path}")
        service = "secretsmanager"
        try:
            if self._in_progress >= self._max:
                return self._error(call, errors.Throttling("Too many requests in progress; retry."), service)
            self._in_progress += 1
            try:
                return await self._serve(call, request)
            finally:
                self._in_progress -= 1
        except ProtocolError as exc:
            log.info("aws.protocol_error", code=exc.code, status=exc.status)
            return self._respond(
                call, exc.status, _json_body(exc.code, exc.message, service=""), JSON_CONTENT_TYPE
            )
        except Exception as exc:  # the last resort: never a trace to the client
            log.exception("aws.internal_error", error_type=type(exc).__name__)
            return self._respond(
                call, 500, _json_body("InternalFailure", INTERNAL_HTTP_MESSAGE, service=""), JSON_CONTENT_TYPE
            )
        finally:
            structlog.contextvars.unbind_contextvars("request_id", "method", "principal")
            for token in reversed(call.tokens):
                token.var.reset(token)

    async def _serve(self, call: _Call, request: web.Request) -> web.StreamResponse:
        if request.method != "POST" or request.path not in self._paths:
            raise ProtocolError(404, "UnknownOperationException", "Only POST / is served here.")
        content_type = request.content_type.lower()
        if content_type not in JSON_CONTENT_TYPES and content_type != FORM_CONTENT_TYPE:
            raise ProtocolError(
                404,
                "UnknownOperationException",
                f"Content-Type must be {JSON_CONTENT_TYPE} (or {FORM_CONTENT_TYPE} for STS).",
            )
        body = await self._read(request)
        source_ip = request.remote
        if source_ip:
            call.tokens.append(ctx.source_ip_var.set(source_ip))
        user_agent = request.headers.get("User-Agent")
        if user_agent:
            call.tokens.append(ctx.user_agent_var.set(user_agent[:MAX_USER_AGENT]))
        parsed = (
            self._parse_form(body) if content_type == FORM_CONTENT_TYPE else self._parse_json(request, body)
        )
        structlog.contextvars.bind_contextvars(method=parsed.method or "aws:unknown")
        try:
            await self._authenticate(call, request, body, parsed.service)
        except errors.CofferError as exc:
            await self._publish_refusal(parsed, exc)
            return self._error(call, exc, parsed.service)
        except Exception as exc:
            err = classify(exc)
            if isinstance(err, errors.Internal):
                log.exception("aws.internal_error", error_type=type(exc).__name__)
            else:
                log.warning(
                    "aws.dependency_error", code=err.code, error_type=type(exc).__name__, exc_info=exc
                )
            await self._publish_refusal(parsed, err)
            return self._error(call, err, parsed.service)
        try:
            if parsed.deferred is not None:
                raise parsed.deferred
            assert parsed.operation is not None and parsed.message is not None
            if parsed.poll:
                assert isinstance(parsed.message, longpoll.REQUEST_CLASS)
                response: Message = await longpoll.poll(parsed.operation, parsed.message)
            else:
                response = await parsed.operation.invoke(parsed.message, None)
            return self._success(call, parsed, response)
        except Exception as exc:
            err = classify(exc)
            if err is exc:
                log.info("aws.error", code=err.code, error=err.message)
            elif isinstance(err, errors.Internal):
                log.exception("aws.internal_error", error_type=type(exc).__name__)
            else:
                log.warning(
                    "aws.dependency_error", code=err.code, error_type=type(exc).__name__, exc_info=exc
                )
            return self._error(call, err, parsed.service)

    async def _read(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > MAX_REQUEST_BYTES:
            raise _too_large()
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large() from None

    def _parse_json(self, request: web.Request, body: bytes) -> _Parsed:
        # AWS's order (aws-wire.md §2): the body's JSON, then the target, then the signature.
        try:
            document = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError(
                400, "SerializationException", "The request body is not valid JSON."
            ) from None
        except RecursionError:  # e.g. 50,000 nested arrays: the parser gives up before the stack does
            raise ProtocolError(
                400, "SerializationException", "The request body is nested too deeply to be read."
            ) from None
        if not isinstance(document, dict):
            raise ProtocolError(400, "SerializationException", "The request body must be a JSON object.")
        target = request.headers.get(TARGET_HEADER, "")
        prefix = target.partition(".")[0]
        service = TARGET_SERVICES.get(prefix)
        operation = self._targets.get(target)
        poll = operation is None and target in self._polls
        if poll:
            operation = self._polls[target]
        if service is None or operation is None:
            raise ProtocolError(
                400, "UnknownOperationException", f"Unknown operation (X-Amz-Target {target[:100]!r})."
            )
        parsed = _Parsed(service=service, operation=operation, method=operation.full_name, poll=poll)
        request_class = longpoll.REQUEST_CLASS if poll else operation.request_class
        try:
            parsed.message = jsonproto.request_from_json(request_class, document)
        except errors.CofferError as exc:
            parsed.deferred = exc
        return parsed

    def _parse_form(self, body: bytes) -> _Parsed:
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise ProtocolError(400, "SerializationException", "The form body is not valid UTF-8.") from None
        parsed = _Parsed(service=STS_SERVICE)
        try:
            method, message = query.sts_request(form)
        except errors.CofferError as exc:
            parsed.deferred = exc
            return parsed
        operation = self._operations.get(method)
        if operation is None:
            parsed.deferred = errors.InvalidParameter("This action is not served here.", code="InvalidAction")
            return parsed
        parsed.operation, parsed.message, parsed.method = operation, message, method
        return parsed

    # -- authentication -----------------------------------------------------------------------------------

    async def _authenticate(self, call: _Call, request: web.Request, body: bytes, service: str) -> None:
        """SigV4 end to end; binds the caller. Raises ``errors.Unauthenticated`` with AWS's code."""
        headers: dict[str, list[str]] = {}
        for name, value in request.raw_headers:
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        raw_path, _, raw_query = request.raw_path.partition("?")
        http = sigv4.HttpRequest(
            method=request.method, path=raw_path, query=raw_query, headers=headers, body=body
        )
        header = sigv4.parse(http)
        now = self._clock()
        sigv4.check(header, http, region=self._region, service=service, now=now)
        session_token = sigv4.session_token(http)  # check() made sure it is signed
        resolved = await self._directory.resolve(header.access_key_id)
        signing.check_key(
            resolved.record.key_material() if resolved is not None else None,
            header.access_key_id,
            session_token=session_token,
            now=now,
            token_header="X-Amz-Security-Token",
            invalid_token_code=signing.UNKNOWN_KEY_CODE,
        )
        assert resolved is not None  # check_key refuses an unknown key
        secret = resolved.record.secret_access_key
        if not secret:
            raise errors.Unauthenticated(NO_SECRET_MESSAGE, code=signing.UNKNOWN_KEY_CODE)
        sigv4.verify(header, http, secret)
        principal = resolved.principal
        call.tokens.append(ctx.principal_var.set(principal.arn))
        call.tokens.append(ctx.caller_var.set(principal))
        call.tokens.append(ctx.access_key_id_var.set(header.access_key_id))
        call.admitted = True
        structlog.contextvars.bind_contextvars(principal=principal.arn)

    async def _publish_refusal(self, parsed: _Parsed, error: errors.CofferError) -> None:
        """Record a request refused before it was admitted in the audit trail, as the gRPC port does
        (``CallInterceptor._publish`` with ``unadmitted_only``): best effort unless the audit says fail
        closed, in which case the refusal stands anyway (nothing was disclosed)."""
        public = self._public
        if public is None or not parsed.method:
            return
        source = public.source_of(parsed.method, None, admitted=False)
        if source is None:
            return
        event = call_event(
            event_source=source,
            event_name=parsed.method.rpartition("/")[2],
            region=public.region,
            caller=None,
            request=parsed.message,
            response=None,
            error=error,
        )
        try:
            await public.trail.record(event)
        except Exception as exc:
            log.warning("audit.trail_failed", event_id=event.event_id, error_type=type(exc).__name__)

    # -- answers ------------------------------------------------------------------------------------------

    def _success(self, call: _Call, parsed: _Parsed, response: Message) -> web.Response:
        log.debug("aws.ok", ms=round((time.perf_counter() - call.started) * 1000, 3))
        if parsed.service == STS_SERVICE:
            return self._respond(
                call, 200, query.sts_response(parsed.method, response, call.request_id), XML_CONTENT_TYPE
            )
        body = json.dumps(jsonproto.response_to_json(response), separators=(",", ":")).encode()
        return self._respond(call, 200, body, JSON_CONTENT_TYPE)

    def _error(self, call: _Call, exc: BaseException, service: str) -> web.Response:
        status, code, message, internal = to_http(exc, service=service)
        if service == STS_SERVICE:
            err = classify(exc)
            if internal:
                err = errors.Internal(INTERNAL_HTTP_MESSAGE, code=code)
            status, xml = query.sts_error(err, call.request_id)
            response = self._respond(call, status, xml, XML_CONTENT_TYPE)
            fault = "Receiver" if status >= 500 else "Sender"
            response.headers[QUERY_ERROR_HEADER] = f"{query.sts_code(err)[1]};{fault}"
            return response
        return self._respond(call, status, _json_body(code, message, service=service), JSON_CONTENT_TYPE)

    @staticmethod
    def _respond(call: _Call, status: int, body: bytes, content_type: str) -> web.Response:
        response = web.Response(status=status, body=body, content_type=content_type)
        response.headers[REQUEST_ID_HEADER] = call.request_id
        return response


async def _every_response(_request: web.Request, response: web.StreamResponse) -> None:
    """Whatever answers (aiohttp itself included, e.g. for a request it cannot route): a request id, and no
    server software versions."""
    if REQUEST_ID_HEADER not in response.headers:
        response.headers[REQUEST_ID_HEADER] = str(uuid.uuid4())
    response.headers["Server"] = "Coffer"


def _too_large() -> ProtocolError:
    return ProtocolError(
        413,
        "RequestEntityTooLargeException",
        f"The request body is larger than {MAX_REQUEST_BYTES} bytes, the most this endpoint accepts.",
    )


def server_ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    """TLS 1.2+ with the gateway's certificate (the deployment's CA issued it; it names ``localhost`` and
    ``127.0.0.1`` for this endpoint, ``coffer.pki``); no client certificate (callers sign requests)."""
    if tls.cert is None or tls.key is None:
        raise ValueError("the AWS-protocol endpoint needs the gateway's certificate and key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    return context


@dataclass
class AwsServer:
    """The running endpoint: its aiohttp runner and the port it listens on."""

    runner: web.AppRunner
    port: int
    host: str

    async def stop(self) -> None:
        await self.runner.cleanup()
        log.info("aws.stopped", port=self.port)


async def start_aws_server(
    *,
    bind: str,
    tls: TlsFiles,
    operations: Mapping[str, Operation],
    directory: DirectoryCache,
    region: str,
    public_audit: PublicAudit | None,
    path: str = "/",
    clock: Callable[[], float] = time.time,
) -> AwsServer:
    """Listen on ``bind`` (port 0: any free port) with TLS and serve the AWS protocols there."""
    endpoint = AwsEndpoint(
        operations=operations,
        directory=directory,
        region=region,
        public_audit=public_audit,
        path=path,
        clock=clock,
    )
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_route("*", "/{tail:.*}", endpoint.handle)
    app.on_response_prepare.append(_every_response)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=KEEPALIVE_SECONDS,
        max_line_size=MAX_LINE_BYTES,
        max_field_size=MAX_FIELD_BYTES,
        max_headers=MAX_HEADERS,
        auto_decompress=False,
    )
    bound = await listen(runner, bind, ssl_context=server_ssl_context(tls), backlog=512)
    host = split_address(bind)[0]
    log.info("aws.started", host=host, port=bound)
    return AwsServer(runner=runner, port=bound, host=host)

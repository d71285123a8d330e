"""The web console (issue 15): an HTTPS aiohttp app in the gateway process, on its own port
(``COFFER_CONSOLE_ADDR``), that serves HTML pages over the SAME operations as the gRPC port and the AWS
endpoint (``coffer.gateway.servicer.Operation``: throttle, authorize, forward, audit).

What differs from the AWS endpoint is only how the caller is authenticated: a session (``session.py``)
instead of a signature. Sign-in checks an access key pair the way SigV4 resolves a key (the gateway's
``DirectoryCache`` and ``coffer.crypto.signing.check_key``, the secret compared in constant time), and may
assume a role through the STS operation as the signed-in user. Every later request re-resolves the
session's access key and runs ``check_key`` again, so a deactivated, deleted or expired key ends its
sessions at once. The caller is then bound to the call's context exactly as the AWS endpoint binds it, so
the store decides, and records in the audit trail, every call as the signed-in principal's.

Every page is answered with a strict Content-Security-Policy (``default-src 'self'``, no inline script or
style: the pages load ``/static/console.css`` and ``/static/console.js``, which ship in this package),
``Cache-Control: no-store`` (a revealed value never sits in the browser's cache), no framing and no
referrer. Every POST needs the session's CSRF token (and, when the browser sends one, an ``Origin`` naming
this console). A button is shown only when the principal's identity policies allow its action on the
resource (``coffer.core.authorize.decide``); the decision that counts is still the store's, on the POST.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import secrets
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlencode

import jinja2
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from coffer import logs
from coffer.audit_trail import AuditTrail, call_event
from coffer.core import errors
from coffer.core.authorize import decide
from coffer.core.policy.grammar import parse_policy
from coffer.core.policy.model import Policy, PolicyKind
from coffer.core.principal import Principal
from coffer.core.secret_keys import SecretFacts, global_keys, secret_keys
from coffer.crypto import signing
from coffer.gateway.aws import jsonproto
from coffer.gateway.aws.server import (
    KEEPALIVE_SECONDS,
    MAX_FIELD_BYTES,
    MAX_HEADERS,
    MAX_LINE_BYTES,
    server_ssl_context,
)
from coffer.gateway.console.session import (
    Session,
    SessionStore,
    SigninLimiter,
    SigninTokens,
    same_origin,
)
from coffer.gateway.servicer import Operation
from coffer.httpsite import listen
from coffer.principal_directory import DirectoryCache, Resolved
from coffer.rpc import context as ctx
from coffer.rpc.status import INTERNAL_HTTP_MESSAGE, bounded_message, classify
from coffer.rpc.tls import TlsFiles
from coffer.settings import split_address

log = logs.get_logger("coffer.gateway.console")

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

SESSION_COOKIE = "__Host-coffer-console"
SIGNIN_COOKIE = "__Host-coffer-signin"
CSRF_FIELD = "csrf_token"
MAX_REQUEST_BYTES = 256 * 1024
MAX_USER_AGENT = 256
PAGE_SIZE = 25
AUDIT_PAGE_SIZE = 50
#: How long a role assumed at sign-in lasts (AssumeRole's DurationSeconds).
ROLE_SECONDS = 3600

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), clipboard-read=()",
}

_SM = "/coffer.api.secrets.v1.SecretsManagerService/"
_KMS = "/coffer.api.kms.v1.KeyManagementService/"
_STS = "/coffer.api.iam.v1.SecurityTokenService/"
_AUDIT = "/coffer.api.audit.v1.AuditService/"

#: The change buttons of a secret's page: name in the template → the action it needs.
SECRET_ACTIONS: Mapping[str, str] = {
    "reveal": "secretsmanager:GetSecretValue",
    "edit": "secretsmanager:UpdateSecret",
    "put_value": "secretsmanager:PutSecretValue",
    "tag": "secretsmanager:TagResource",
    "untag": "secretsmanager:UntagResource",
    "rotate": "secretsmanager:RotateSecret",
    "cancel_rotation": "secretsmanager:CancelRotateSecret",
    "delete": "secretsmanager:DeleteSecret",
    "restore": "secretsmanager:RestoreSecret",
    "put_policy": "secretsmanager:PutResourcePolicy",
    "delete_policy": "secretsmanager:DeleteResourcePolicy",
}
#: The pages of the navigation bar → the action each lists with (a link shows only when it is allowed).
NAV_ACTIONS: Mapping[str, str] = {
    "secrets": "secretsmanager:ListSecrets",
    "kms": "kms:ListKeys",
    "audit": "cloudtrail:LookupEvents",
}
LIST_FILTER_KEYS = ("all", "name", "description", "tag-key", "tag-value", "primary-region")
SORT_BY = ("created-date", "last-changed-date", "last-accessed-date", "name")
AUDIT_ATTRIBUTES = (
    "EventName",
    "Username",
    "ResourceName",
    "ResourceType",
    "EventSource",
    "AccessKeyId",
    "ReadOnly",
    "EventId",
)

SIGNIN_FAILED = "The access key ID or the secret access key is not valid, or the key is not active."
SIGNIN_LIMITED = (
    "Too many failed sign-ins from this address or for this access key. Wait a few minutes and try again."
)
#: The audit trail's record of a console sign-in (as CloudTrail's).
SIGNIN_SOURCE = "signin.amazonaws.com"
SIGNIN_EVENT = "ConsoleLogin"
#: A change (a POST) the console refused before it reached an operation: no session, or no valid CSRF token.
REFUSED_EVENT = "ConsoleRequestRefused"
SESSION_ENDED = "Your session has ended. Sign in again."
CSRF_REFUSED = (
    "This form was refused: its security token is missing or out of date (CSRF protection). "
    "Reload the page and try again."
)


class Refused(Exception):
    """A request the console refuses itself (no session, bad CSRF token): status and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _when(value: Any) -> str:
    """An AWS JSON timestamp (epoch seconds) as UTC text."""
    if isinstance(value, jinja2.Undefined) or value in (None, ""):
        return ""
    try:
        moment = dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    except (TypeError, ValueError, OverflowError):
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _pretty_json(text: Any) -> str:
    if isinstance(text, jinja2.Undefined) or not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True)
    except (TypeError, ValueError):
        return str(text)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        enable_async=False,
    )
    env.filters["when"] = _when
    env.filters["pretty_json"] = _pretty_json
    return env


@dataclass
class View:
    """One authenticated request: its session, its caller, its form, and calls as that caller."""

    console: ConsoleApp
    request: web.Request
    session: Session
    session_id: str
    principal: Principal
    form: MultiDictProxy[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def field(self, name: str, default: str = "") -> str:
        """A text field of the POSTed form (stripped of nothing: secret values are kept as typed)."""
        if self.form is None:
            return default
        value = self.form.get(name)
        return value if isinstance(value, str) else default

    def query(self, name: str, default: str = "") -> str:
        return self.request.query.get(name, default)

    async def call(self, method: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Run the public operation ``method`` (full name) with the AWS-JSON ``body`` as this caller."""
        return await self.console.call(method, body)

    async def optional(self, method: str, body: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """Like :meth:`call`, but a refusal or error becomes (None, the message to show)."""
        try:
            return await self.call(method, body), ""
        except Exception as exc:
            err = classify(exc)
            if isinstance(err, errors.Internal):
                log.exception("console.internal_error", error_type=type(exc).__name__)
                return None, INTERNAL_HTTP_MESSAGE
            return None, f"{err.code}: {bounded_message(err.message)}"

    def can(self, action: str, resource: str = "*", *, account: str | None = None) -> bool:
        """Whether the caller's identity policies allow ``action`` on ``resource`` (to show a button)."""
        decision = decide(
            self.principal, action, resource, resource_account=account or self.principal.account
        )
        return decision.allowed

    def can_on_secret(self, action: str, secret: SecretFacts) -> bool:
        """Whether ``action`` on ``secret`` would be allowed, decided as the store decides it: the caller's
        policies, the secret's resource policy and the same condition keys (``secret_keys``, the global
        keys). Only shows or hides a button: the store's decision on the POST is the one that counts."""
        policy: Policy | None = None
        if secret.resource_policy:
            try:
                policy = parse_policy(secret.resource_policy, PolicyKind.RESOURCE, name=secret.arn)
            except errors.CofferError:
                policy = None  # the store refuses to use it too
        keys = dict(
            global_keys(
                now=dt.datetime.fromtimestamp(self.console.now(), dt.UTC),
                region=self.console.region,
                source_ip=self.request.remote,
            )
        )
        keys.update(secret_keys(secret))
        decision = decide(
            self.principal,
            action,
            secret.arn,
            resource_account=secret.account,
            resource_policy=policy,
            keys=keys,
        )
        return decision.allowed

    def render(self, template: str, status: int = 200, **values: Any) -> web.Response:
        return self.console.render(
            template,
            status=status,
            session=self.session,
            principal=self.principal,
            csrf_token=self.session.csrf_token,
            flash=self.session.take_flash(),
            nav_can={name: self.can(action) for name, action in NAV_ACTIONS.items()},
            **values,
        )

    def done(self, message: str, location: str) -> NoReturn:
        """After a change: remember ``message`` for the next page and send the browser there (303)."""
        self.session.flash = message
        raise web.HTTPSeeOther(location)


Page = Callable[[View], Awaitable[web.StreamResponse]]


def secret_url(secret_id: str) -> str:
    return "/secret?" + urlencode({"id": secret_id})


class ConsoleApp:
    def __init__(
        self,
        *,
        operations: Mapping[str, Operation],
        directory: DirectoryCache,
        region: str,
        clock: Callable[[], float] = time.time,
        sessions: SessionStore | None = None,
        trail: AuditTrail | None = None,
    ) -> None:
        self._ops = operations
        self._trail = trail
        self.limiter = SigninLimiter(clock=clock)
        self._directory = directory
        self.region = region
        self._clock = clock
        self.sessions = sessions or SessionStore(clock=clock)
        self.signin_tokens = SigninTokens(secrets.token_bytes(32), clock=clock)
        self._env = templates()

    def now(self) -> float:
        """The console's clock (seconds since the epoch)."""
        return self._clock()

    # -- plumbing -----------------------------------------------------------------------------------------

    def render(self, template: str, *, status: int = 200, **values: Any) -> web.Response:
        body = self._env.get_template(template).render(region=self.region, **values)
        return web.Response(status=status, text=body, content_type="text/html", charset="utf-8")

    def error_page(self, status: int, code: str, message: str, view: View | None = None) -> web.Response:
        values: dict[str, Any] = {"code": code, "message": message, "http_status": status}
        if view is not None:
            return view.render("error.html", status=status, **values)
        return self.render("error.html", status=status, session=None, **values)

    async def call(self, method: str, body: Mapping[str, Any]) -> dict[str, Any]:
        operation = self._ops[method]
        message = jsonproto.request_from_json(operation.request_class, dict(body))
        response = await operation.invoke(message, None)
        return jsonproto.response_to_json(response)

    async def _key(self, access_key_id: str, session_token: str | None) -> Resolved:
        """The directory's entry of an access key that may sign in now (``check_key``, as SigV4)."""
        resolved = await self._directory.resolve(access_key_id)
        signing.check_key(
            resolved.record.key_material() if resolved is not None else None,
            access_key_id,
            session_token=session_token,
            now=self._clock(),
        )
        assert resolved is not None
        return resolved

    @staticmethod
    def _bind(tokens: list[contextvars.Token[Any]], request: web.Request, resolved: Resolved) -> None:
        principal = resolved.principal
        tokens.append(ctx.principal_var.set(principal.arn))
        tokens.append(ctx.caller_var.set(principal))
        tokens.append(ctx.access_key_id_var.set(resolved.record.access_key_id))
        if request.remote:
            tokens.append(ctx.source_ip_var.set(request.remote))
        agent = request.headers.get("User-Agent")
        if agent:
            tokens.append(ctx.user_agent_var.set(agent[:MAX_USER_AGENT]))
        structlog.contextvars.bind_contextvars(principal=principal.arn)

    def page(self, handler: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """An authenticated page: session → key re-checked → caller bound → CSRF checked on POST →
        ``handler``; errors become pages a person can act on."""

        async def serve(request: web.Request) -> web.StreamResponse:
            tokens: list[contextvars.Token[Any]] = [ctx.request_id_var.set(str(uuid.uuid4()))]
            structlog.contextvars.bind_contextvars(method=f"console:{request.method} {request.path}")
            view: View | None = None
            caller: Principal | None = None
            try:
                session_id = request.cookies.get(SESSION_COOKIE, "")
                session = self.sessions.get(session_id)
                if session is None:
                    raise Refused(401, "SessionEnded", SESSION_ENDED)
                try:
                    resolved = await self._key(session.access_key_id, session.session_token)
                except errors.Unauthenticated:
                    self.sessions.delete(session_id)
                    raise Refused(401, "SessionEnded", SESSION_ENDED) from None
                caller = resolved.principal
                form = None
                if request.method == "POST":
                    form = await request.post()
                    token = form.get(CSRF_FIELD)
                    if not same_origin(request.headers.get("Origin"), request.host) or not (
                        session.check_csrf(token if isinstance(token, str) else None)
                    ):
                        raise Refused(403, "InvalidCsrfToken", CSRF_REFUSED)
                self._bind(tokens, request, resolved)
                view = View(self, request, session, session_id, caller, form)
                return await handler(view)
            except Refused as exc:
                log.info("console.refused", code=exc.code, status=exc.status)
                if request.method == "POST":  # a change refused before any operation: recorded too
                    await self._record(
                        request,
                        caller,
                        errors.AccessDenied(f"{exc.message} ({request.path})", code=exc.code),
                        REFUSED_EVENT,
                    )
                if exc.status == 401 and request.method == "GET":
                    raise web.HTTPSeeOther("/signin?" + urlencode({"next": request.path_qs})) from None
                response = self.error_page(exc.status, exc.code, exc.message, view)
                if exc.status == 401:
                    response.del_cookie(
                        SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Strict"
                    )
                return response
            except web.HTTPException:
                raise
            except Exception as exc:
                err = classify(exc)
                if isinstance(err, errors.Internal):
                    log.exception("console.internal_error", error_type=type(exc).__name__)
                    return self.error_page(500, err.code, INTERNAL_HTTP_MESSAGE, view)
                log.info("console.error", code=err.code, error=err.message)
                return self.error_page(status_of(err), err.code, bounded_message(err.message), view)
            finally:
                structlog.contextvars.unbind_contextvars("method", "principal")
                for token in reversed(tokens):
                    token.var.reset(token)

        return serve

    # -- sign-in and sign-out -----------------------------------------------------------------------------

    async def signin_form(
        self, request: web.Request, *, message: str = "", status: int = 200
    ) -> web.Response:
        nonce, token = self.signin_tokens.issue()
        next_path = _local_path(request.query.get("next", ""))
        response = self.render(
            "signin.html",
            status=status,
            session=None,
            signin_token=token,
            next_path=next_path,
            message=message,
            access_key_id=request.query.get("access_key_id", ""),
        )
        response.set_cookie(
            SIGNIN_COOKIE, nonce, path="/", secure=True, httponly=True, samesite="Strict", max_age=15 * 60
        )
        return response

    async def signin_page(self, request: web.Request) -> web.StreamResponse:
        return await self.signin_form(request)

    async def signin(self, request: web.Request) -> web.StreamResponse:
        tokens: list[contextvars.Token[Any]] = [ctx.request_id_var.set(str(uuid.uuid4()))]
        try:
            form = await request.post()
            token = form.get(CSRF_FIELD)
            if not same_origin(request.headers.get("Origin"), request.host) or not self.signin_tokens.check(
                request.cookies.get(SIGNIN_COOKIE), token if isinstance(token, str) else None
            ):
                return await self.signin_form(request, message=CSRF_REFUSED, status=403)
            access_key_id = _text(form.get("access_key_id")).strip()
            secret = _text(form.get("secret_access_key")).strip()
            role_arn = _text(form.get("role_arn")).strip()
            next_path = _local_path(_text(form.get("next")))
            address = f"ip:{request.remote or ''}"
            akid_key = f"key:{access_key_id[:128]}"
            if not self.limiter.allowed(address, akid_key):
                log.info("console.signin_limited")
                return await self.signin_form(request, message=SIGNIN_LIMITED, status=429)
            try:
                resolved = await self._verify_pair(access_key_id, secret)
            except errors.Unauthenticated as exc:
                log.info("console.signin_refused")
                self.limiter.failed(address, akid_key)
                await self._record(request, None, exc)
                return await self.signin_form(request, message=SIGNIN_FAILED, status=401)
            self.limiter.succeeded(akid_key)
            session_token: str | None = None
            not_after: float | None = None
            if role_arn:
                self._bind(tokens, request, resolved)
                try:
                    assumed = await self.call(
                        _STS + "AssumeRole",
                        {
                            "RoleArn": role_arn,
                            "RoleSessionName": f"console-{resolved.principal.name}"[:64],
                            "DurationSeconds": ROLE_SECONDS,
                        },
                    )
                except Exception as exc:
                    err = classify(exc)
                    message = INTERNAL_HTTP_MESSAGE if isinstance(err, errors.Internal) else err.message
                    return await self.signin_form(
                        request, message=f"The role could not be assumed: {message}", status=status_of(err)
                    )
                credentials = assumed.get("Credentials", {})
                access_key_id = str(credentials.get("AccessKeyId", ""))
                session_token = str(credentials.get("SessionToken", "")) or None
                expiration = credentials.get("Expiration")
                not_after = float(expiration) if isinstance(expiration, int | float) else None
                resolved = await self._key(access_key_id, session_token)
            # A new session id at every sign-in (never one the browser brought: no fixation); the
            # browser's previous session, if any, ends here.
            self.sessions.delete(request.cookies.get(SESSION_COOKIE))
            session_id, _session = self.sessions.create(
                access_key_id=access_key_id,
                principal_arn=resolved.principal.arn,
                session_token=session_token,
                role_arn=role_arn or None,
                not_after=not_after,
            )
            log.info("console.signed_in", principal=resolved.principal.arn, role=bool(role_arn))
            await self._record(request, resolved.principal, None)
            response = _redirect(next_path or "/secrets")
            response.set_cookie(
                SESSION_COOKIE,
                session_id,
                path="/",
                secure=True,
                httponly=True,
                samesite="Strict",
                max_age=int(self.sessions.remaining(_session)),
            )
            response.del_cookie(SIGNIN_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
            return response
        finally:
            for t in reversed(tokens):
                t.var.reset(t)

    async def _record(
        self,
        request: web.Request,
        caller: Principal | None,
        error: errors.CofferError | None,
        event_name: str = SIGNIN_EVENT,
    ) -> None:
        """A console event in the audit trail: a sign-in (ConsoleLogin), or a change the console refused
        before any operation ran (best effort: the request is refused either way; a lost event is logged).
        Nothing of the form is recorded (a sign-in's holds the secret access key)."""
        if self._trail is None:
            return
        tokens: list[contextvars.Token[Any]] = []
        if request.remote:
            tokens.append(ctx.source_ip_var.set(request.remote))
        agent = request.headers.get("User-Agent")
        if agent:
            tokens.append(ctx.user_agent_var.set(agent[:MAX_USER_AGENT]))
        try:
            event = call_event(
                event_source=SIGNIN_SOURCE,
                event_name=event_name,
                region=self.region,
                caller=caller,
                request=None,
                response=None,
                error=error,
            )
            await self._trail.record(event)
        except Exception as exc:
            log.warning("console.audit_trail_failed", error_type=type(exc).__name__)
        finally:
            for token in reversed(tokens):
                token.var.reset(token)

    async def _verify_pair(self, access_key_id: str, secret: str) -> Resolved:
        """The key's entry if ``secret`` is its secret access key and it may sign now."""
        if not access_key_id or not secret or len(access_key_id) > 128 or len(secret) > 256:
            raise errors.Unauthenticated(SIGNIN_FAILED)
        resolved = await self._key(access_key_id, None)
        expected = resolved.record.secret_access_key or ""
        # Constant time; a key without a stored secret (created before SigV4) never matches.
        if not expected or not secrets.compare_digest(expected.encode("utf-8"), secret.encode("utf-8")):
            raise errors.Unauthenticated(SIGNIN_FAILED)
        return resolved

    async def signout(self, view: View) -> web.StreamResponse:
        self.sessions.delete(view.session_id)
        log.info("console.signed_out", principal=view.principal.arn)
        response = _redirect("/signin")
        response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
        return response


def status_of(err: errors.CofferError) -> int:
    if isinstance(err, errors.AccessDenied):
        return 403
    if isinstance(err, errors.Unauthenticated):
        return 401
    if isinstance(err, errors.NotFound):
        return 404
    if isinstance(err, errors.Throttling):
        return 429
    if isinstance(err, errors.Unavailable | errors.Aborted):
        return 503
    return 400


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _local_path(path: str) -> str:
    """``path`` if it is a path of this console (never another site: no scheme, no ``//``), else ""."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return ""
    return path


async def _every_response(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers["Server"] = "Coffer"
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-cache"
    else:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"


@dataclass
class ConsoleServer:
    runner: web.AppRunner
    port: int
    host: str
    app: ConsoleApp

    async def stop(self) -> None:
        await self.runner.cleanup()
        log.info("console.stopped", port=self.port)


def build_app(console: ConsoleApp) -> web.Application:
    from coffer.gateway.console import pages

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_get("/signin", console.signin_page)
    app.router.add_post("/signin", console.signin)
    app.router.add_post("/signout", console.page(console.signout))
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    pages.add_routes(app, console)
    app.on_response_prepare.append(_every_response)
    return app


def console_ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    return server_ssl_context(tls)


async def start_console_server(
    *,
    bind: str,
    tls: TlsFiles,
    operations: Mapping[str, Operation],
    directory: DirectoryCache,
    region: str,
    trail: AuditTrail | None = None,
    clock: Callable[[], float] = time.time,
) -> ConsoleServer:
    """Listen on ``bind`` (port 0: any free port) with TLS and serve the console there; sign-ins are
    recorded in ``trail``."""
    console = ConsoleApp(operations=operations, directory=directory, region=region, clock=clock, trail=trail)
    runner = web.AppRunner(
        build_app(console),
        access_log=None,
        handle_signals=False,
        keepalive_timeout=KEEPALIVE_SECONDS,
        max_line_size=MAX_LINE_BYTES,
        max_field_size=MAX_FIELD_BYTES,
        max_headers=MAX_HEADERS,
    )
    bound = await listen(runner, bind, ssl_context=console_ssl_context(tls))
    host = split_address(bind)[0]
    log.info("console.started", host=host, port=bound)
    return ConsoleServer(runner=runner, port=bound, host=host, app=console)

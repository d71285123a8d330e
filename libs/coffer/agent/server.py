"""The local agent's HTTP server: the AWS Secrets Manager Agent's interface, answered from a ``SecretCache``.

    GET /secretsmanager/get?secretId=db/prod[&versionId=…][&versionStage=…][&refreshNow=true]
    GET /v1/db/prod[?versionId=…&versionStage=…&refreshNow=…]        (``path_prefix``)
    GET /ping                                                         → 200 healthy (no token)
    header X-Aws-Parameters-Secrets-Token: <the value of $AWS_TOKEN>
                                       (``ssrf_headers`` / ``ssrf_env_variables``)

Checks run in AWS's agent's order and answer its statuses and bodies (``aws-wire.md`` §6.1): 429 ``Connection
limit exceeded``, 400 ``Forwarded``, 403 ``Bad Token``, 405 ``Not allowed``, 404 ``Not found``, 400 ``unknown
parameter: <k>`` / ``missing parameter secretId`` / ``missing secret ID`` / ``invalid refreshNow value``;
Coffer's errors as ``{"__type": <code>, "message": <message>}`` with the status AWS gives that code, the
gateway unreachable as 502, a deadline as 504. Beyond AWS's agent, which only ever binds loopback: a caller
whose address is not loopback gets 403 ``Forbidden`` (bound elsewhere by mistake, or a proxy on the host).

Success is GetSecretValue's JSON with ``CreatedDate`` as a string of epoch seconds, as AWS's agent sends it
(aiohttp always sends a Content-Type, ``application/octet-stream``, where AWS's agent sends none).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import json
import socket
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from coffer import logs
from coffer.agent.config import AgentConfig
from coffer.client.cache import CachedSecret, SecretCache
from coffer.client.retry import DeadlineExceeded
from coffer.core import errors

log = logs.get_logger("coffer.agent")

QUERY_PATH = "/secretsmanager/get"
PING_PATH = "/ping"
LOOPBACK = "127.0.0.1"
#: Extra requests in flight ``/ping`` may use beyond ``max_conn`` (so that a busy agent still says healthy).
PING_HEADROOM = 2
_QUERY_KEYS = frozenset({"secretId", "versionId", "versionStage", "refreshNow"})
_PATH_KEYS = _QUERY_KEYS - {"secretId"}


def is_loopback_peer(peername: Any) -> bool:
    """Whether a socket's peer (``transport.get_extra_info("peername")``) is a loopback address."""
    if not isinstance(peername, tuple) or not peername:
        return False
    try:
        address = ipaddress.ip_address(str(peername[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def http_status(error: errors.CofferError) -> int:
    """The HTTP status Secrets Manager answers this error with (``aws-secrets-manager.md`` §11)."""
    if isinstance(error, DeadlineExceeded):
        return 504
    if isinstance(error, errors.Unavailable):
        return 503
    if isinstance(error, errors.Internal):
        return 500
    return 400


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, body=body.encode())


def _error_response(error: Exception) -> web.Response:
    from coffer.client._ops import EndpointUnreachable

    if isinstance(error, DeadlineExceeded):
        return _text(504, json.dumps({"__type": "TimeoutError", "message": "Timeout"}))
    if isinstance(error, EndpointUnreachable):
        return _text(502, json.dumps({"__type": "ConnectionError", "message": "Read Error"}))
    if isinstance(error, errors.CofferError) and error.message:
        return _text(http_status(error), json.dumps({"__type": error.code, "message": error.message}))
    return _text(500, json.dumps({"__type": "InternalFailure"}))


def render(secret: CachedSecret) -> bytes:
    """GetSecretValue's JSON as AWS's agent writes it (key order, ``CreatedDate`` a string)."""
    body: dict[str, Any] = {"ARN": secret.arn, "Name": secret.name, "VersionId": secret.version_id}
    if secret.secret_string is not None:
        body["SecretString"] = secret.secret_string
    if secret.secret_binary is not None:
        body["SecretBinary"] = base64.b64encode(secret.secret_binary).decode("ascii")
    body["VersionStages"] = list(secret.version_stages)
    created = secret.created_date
    body["CreatedDate"] = f"{created.timestamp():.3f}" if created is not None else None
    return json.dumps(body, separators=(",", ":")).encode()


class Agent:
    """The HTTP server over ``cache``. ``await agent.start()`` binds ``host`` (loopback; port
    ``config.http_port``, or ``port`` when given, 0 = any free one) and returns the port; ``await
    agent.close()`` stops it. ``token`` is the SSRF token (``read_ssrf_token``)."""

    def __init__(
        self,
        config: AgentConfig,
        cache: SecretCache,
        token: str,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
    ) -> None:
        if not token:
            raise errors.InvalidParameter("The agent needs a non-empty SSRF token.")
        self.config = config
        self.cache = cache
        self._token = token.encode()
        self._host = host
        self._port = config.http_port if port is None else port
        self._in_flight = 0
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.app = web.Application(handler_args={"max_field_size": 16384})
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def start(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # As AWS's agent: answers never leave the host (accepted sockets inherit the listener's TTL).
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
            sock.bind((self._host, self._port))
            sock.listen(min(self.config.max_conn, socket.SOMAXCONN))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        self.port = sock.getsockname()[1]
        log.info("agent_listening", host=self._host, port=self.port)
        return self.port

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _token_ok(self, headers: Mapping[str, str]) -> bool:
        ok = False
        for name in self.config.ssrf_headers:
            value = headers.get(name)
            if value is not None and hmac.compare_digest(value.encode(), self._token):
                ok = True
        return ok

    async def handle(self, request: web.Request) -> web.Response:
        is_ping = request.rel_url.raw_path == PING_PATH
        limit = self.config.max_conn + (PING_HEADROOM if is_ping else 0)
        if self._in_flight >= limit:
            return _text(429, "Connection limit exceeded")
        self._in_flight += 1
        try:
            return await self._handle(request, is_ping)
        finally:
            self._in_flight -= 1

    async def _handle(self, request: web.Request, is_ping: bool) -> web.Response:
        transport = request.transport
        if transport is None or not is_loopback_peer(transport.get_extra_info("peername")):
            log.warning("agent_refused_peer", peer=str(request.remote))
            return _text(403, "Forbidden")
        if "X-Forwarded-For" in request.headers:
            return _text(400, "Forwarded")
        if is_ping and request.method == "GET":
            return _text(200, "healthy")
        if not self._token_ok(request.headers):
            return _text(403, "Bad Token")
        if request.method != "GET":
            return _text(405, "Not allowed")
        raw_path = request.rel_url.raw_path
        query = request.rel_url.query
        if raw_path == QUERY_PATH:
            allowed, secret_id, missing = _QUERY_KEYS, query.get("secretId", ""), "missing parameter secretId"
        elif raw_path.startswith(self.config.path_prefix):
            allowed, secret_id, missing = (
                _PATH_KEYS,
                raw_path[len(self.config.path_prefix) :],
                "missing secret ID",
            )
        else:
            return _text(404, "Not found")
        for key in query:
            if key not in allowed:
                return _text(400, f"unknown parameter: {key}")
        if not secret_id:
            return _text(400, missing)
        refresh = query.get("refreshNow", "false").lower()
        if refresh not in ("true", "false", "1", "0"):
            return _text(400, "invalid refreshNow value")
        version_id = query.get("versionId") or None
        version_stage = query.get("versionStage") or None
        try:
            secret = await self.cache.get_secret_value(
                secret_id,
                version_id=version_id,
                version_stage=version_stage,
                refresh_now=refresh in ("true", "1"),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("agent_read_failed", secret_id=secret_id, error=getattr(exc, "code", type(exc).__name__))
            return _error_response(exc)
        if secret is None:
            stage = version_stage or self.cache.config.default_version_stage
            return _error_response(
                errors.NotFound(
                    f"Secrets Manager can't find the specified secret value for staging label: {stage}"
                )
            )
        return web.Response(status=200, body=render(secret))

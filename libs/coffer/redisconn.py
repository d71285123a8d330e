"""Connecting to Redis (issue 11): one server, or a master that Redis Sentinel manages.

``COFFER_REDIS_URL`` takes redis-py's URLs for one server (``redis://[[user]:password@]host:port/db``,
``rediss://`` for TLS, ``unix://``) and, for a highly available Redis, a Sentinel URL:

    redis+sentinel://[[user]:password@]sentinel1:26379,sentinel2:26379,sentinel3:26379/<master-name>[/<db>]
        [?sentinel_password=...&ssl_ca_certs=/path/ca.pem]

(``rediss+sentinel://`` speaks TLS to the sentinels and to the master). The user and password are the
master's (``requirepass``/ACL); ``sentinel_password`` the sentinels' own when they have one. The client asks
the sentinels where the master is and asks again whenever a connection to it fails, so a Sentinel failover
(the old master killed, a replica promoted) costs the callers a retry, not a restart. Built on redis-py's
``redis.asyncio.sentinel`` (no discovery of our own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_REDIS_PORT = 6379
QUERY_KEYS = frozenset({"sentinel_password", "ssl_ca_certs"})


@dataclass(frozen=True)
class SentinelTarget:
    """What a Sentinel URL names: the sentinels, the master's name in them, and how to log in."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False
    ssl_ca_certs: str | None = None


def _host_port(item: str, default_port: int, url: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [v6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif item.count(":") == 1:
        host, _, port_text = item.partition(":")
    else:
        host, port_text = item, ""
    if not host:
        raise ValueError(f"{redact(url)}: a sentinel address has no host ({item!r})")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"{redact(url)}: {port_text!r} is not a port") from None
    if not 0 < port < 65536:
        raise ValueError(f"{redact(url)}: port {port} is out of range")
    return host, port


def _last(values: list[str] | None) -> str | None:
    return values[-1] if values else None


def parse_sentinel_url(url: str) -> SentinelTarget | None:
    """The Sentinel target ``url`` names, or None when it is not a Sentinel URL; ValueError (with a message
    a person can act on, the password left out) when it is one but malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        return None
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise ValueError(f"{redact(url)}: name at least one sentinel (host:port, comma-separated)")
    sentinels = tuple(_host_port(item, DEFAULT_SENTINEL_PORT, url) for item in hosts.split(","))
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError(f"{redact(url)}: name the master as Sentinel knows it (.../<master-name>[/<db>])")
    if len(parts) > 2:
        raise ValueError(f"{redact(url)}: the path is /<master-name>[/<db>], not {'/'.join(parts)!r}")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ValueError(f"{redact(url)}: the database {parts[1]!r} is not a number")
        db = int(parts[1])
    fields = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(fields) - QUERY_KEYS)
    if unknown:
        known = ", ".join(sorted(QUERY_KEYS))
        raise ValueError(f"{redact(url)}: unknown option(s) {', '.join(unknown)}; known: {known}")
    return SentinelTarget(
        sentinels=sentinels,
        service=unquote(parts[0]),
        db=db,
        username=username,
        password=password,
        sentinel_password=_last(fields.get("sentinel_password")),
        tls=SENTINEL_SCHEMES[scheme.lower()],
        ssl_ca_certs=_last(fields.get("ssl_ca_certs")),
    )


def redact(url: str) -> str:
    """``url`` without its passwords (the master's and ``sentinel_password``), for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hosts}" if colon else f"{user}@{hosts}"
    path, question, query = tail.partition("?")
    if query:
        query = "&".join(
            f"{key}=***" if key == "sentinel_password" else f"{key}={value}"
            for key, _, value in (item.partition("=") for item in query.split("&"))
        )
    return f"{scheme}://{netloc}{slash}{path}{question}{query}"


def endpoints(url: str) -> list[str]:
    """``[host]:port`` of every TCP server ``url`` names (the sentinels of a Sentinel URL; the masters they
    point at are found at run time and are not among them)."""
    try:
        target = parse_sentinel_url(url)
    except ValueError:
        return []
    if target is not None:
        return [f"[{host}]:{port}" for host, port in target.sentinels]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return []
    if not parts.hostname:
        return []
    return [f"[{parts.hostname}]:{port or DEFAULT_REDIS_PORT}"]


def client(url: str, *, socket_connect_timeout: float = 5.0, **options: Any) -> aioredis.Redis:
    """A Redis client for ``url``: redis-py's ``from_url`` for one server, the Sentinel-managed master's
    client for a Sentinel URL (ValueError when that is malformed)."""
    target = parse_sentinel_url(url)
    if target is None:
        made: aioredis.Redis = aioredis.from_url(
            url, socket_connect_timeout=socket_connect_timeout, **options
        )
        return made
    tls: dict[str, Any] = {}
    if target.tls:
        tls = {"ssl": True}
        if target.ssl_ca_certs:
            tls["ssl_ca_certs"] = target.ssl_ca_certs
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={
            "password": target.sentinel_password,
            "socket_connect_timeout": socket_connect_timeout,
            "socket_timeout": socket_connect_timeout,
            **tls,
        },
        socket_connect_timeout=socket_connect_timeout,
        username=target.username,
        password=target.password,
        db=target.db,
        **tls,
        **options,
    )
    master: aioredis.Redis = sentinel.master_for(target.service)
    return master


__all__ = ["SentinelTarget", "client", "endpoints", "parse_sentinel_url", "redact"]

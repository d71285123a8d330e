"""Enforcing the rotation target policy (``coffer.core.targets``) where Coffer connects for rotation (the
rotation service's database targets and functions, the store's RegisterRotationFunction): resolve the host,
check EVERY address it resolved to, and hand back one checked address to connect to, so that a name cannot
resolve to an allowed address for the check and to another one for the connection (DNS rebinding).

Coffer's own endpoints are refused whatever the allow-list says: the four services' addresses, the
database (the store knows its URL; ``make run`` names it to the rotation service in
COFFER_ROTATION_DENIED_TARGETS) and the Redis server (known to the rotation service); names among them are
resolved once, at the first check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable

from coffer import redisconn
from coffer.core.targets import TargetPolicy, TargetRefused, is_socket_host, split_endpoint, url_endpoint
from coffer.settings import SERVICES, Settings

__all__ = ["PinnedNameContext", "TargetGuard", "TargetRefused", "own_endpoints", "tls_client_context"]


def own_endpoints(settings: Settings) -> list[str]:
    """``host:port`` of every service of the deployment, of its database and Redis when the settings name
    them, and COFFER_ROTATION_DENIED_TARGETS."""
    endpoints = [
        address.strip().removeprefix("dns:///")  # replicas: ip:port,ip:port or dns:///name:port
        for service in SERVICES
        for address in settings.addr_of(service).split(",")
        if address.strip()
    ]
    endpoints += settings.rotation_denied_targets
    endpoints += redisconn.endpoints(settings.redis_url)  # a Sentinel URL: every sentinel
    endpoints += [e for e in [url_endpoint(settings.database_url)] if e]
    return endpoints


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (itself when it is an address; empty when it does not resolve)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    found: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in found:
            found.append(address)
    return found


class TargetGuard:
    """The policy plus name resolution. ``address(host, port)`` → the address to connect to."""

    def __init__(self, policy: TargetPolicy, *, own: Iterable[str] = ()) -> None:
        self._policy = policy
        self._own = list(own)
        self._ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> TargetGuard:
        own = own_endpoints(settings)
        return cls(TargetPolicy.from_settings(settings.rotation_allowed_targets, own_endpoints=own), own=own)

    @classmethod
    def default(cls) -> TargetGuard:
        """The policy with nothing set: any address except the ones refused by default."""
        return cls(TargetPolicy.from_settings(None))

    def add_own(self, endpoint: str) -> None:
        """One more of Coffer's own endpoints (a server's address once it is bound to its port)."""
        self._own.append(endpoint)
        own = TargetPolicy.from_settings(None, own_endpoints=[endpoint]).own
        self._policy = TargetPolicy(allowed=self._policy.allowed, own=self._policy.own | own)
        self._ready = False

    async def _with_own_resolved(self) -> TargetPolicy:
        if not self._ready:
            extra: set[tuple[str, int]] = set()
            for endpoint in self._own:
                try:
                    host, port = split_endpoint(endpoint)
                except ValueError:
                    continue
                extra.update((address, port) for address in await resolve(host, port))
            own = TargetPolicy.from_settings(None, own_endpoints=[f"[{a}]:{p}" for a, p in extra]).own
            self._policy = TargetPolicy(allowed=self._policy.allowed, own=self._policy.own | own)
            self._ready = True
        return self._policy

    async def address(self, host: str, port: int) -> str:
        """A checked address of ``host`` to connect to. Raises TargetRefused."""
        policy = await self._with_own_resolved()
        if is_socket_host(host):
            policy.check(host, port, [])  # raises: a socket is refused before any resolution
        addresses = await resolve(host, port)
        policy.check(host, port, addresses)
        return addresses[0]


class PinnedNameContext(ssl.SSLContext):
    """A client context that verifies the certificate against ``pinned_name`` whatever host the driver
    passes: drivers connect to the checked address and would otherwise verify the address itself."""

    pinned_name: str = ""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.pinned_name or server_hostname, session)


def tls_client_context(*, server_name: str, ca_pem: str | None) -> ssl.SSLContext:
    """Verified TLS (1.2+) for ``server_name``: its certificate must chain to ``ca_pem`` when given, else to
    the system's trusted CAs, and name ``server_name``."""
    context = PinnedNameContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem)
    else:
        context.load_default_certs()
    context.pinned_name = server_name
    return context

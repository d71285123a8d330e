"""Where rotation may connect: the operator's target policy for database targets and rotation functions.

Pure (no I/O): parsing ``COFFER_ROTATION_ALLOWED_TARGETS`` and deciding about one host, port and the
addresses its name resolved to. The rotation service and the store resolve names, call :meth:`check` with
EVERY resolved address, and then connect to a checked address (never resolving again).

The rules, in order:

1. A host that names a Unix socket is always refused: a path (``/...``, or anything with ``/`` or ``\\``),
   an abstract socket (``@...``), an empty host, or a list of hosts (``,``). Drivers would connect to a local
   server that trusts local connections (Coffer's own PostgreSQL among them).
2. Coffer's own endpoints (its services, and the database or Redis of the deployment when the process knows
   them) are always refused, whatever the allow-list says.
3. An address (or the host name as written) matching an allow-list entry is allowed.
4. Otherwise loopback, link-local (cloud metadata at 169.254.169.254 included), unspecified, multicast and
   reserved addresses are refused; any other address is allowed only when the list has the entry ``*``.

The allow-list is a comma-separated or JSON list of entries: ``*``; a CIDR or address (``10.0.0.0/8``,
``127.0.0.1``, ``[::1]``); a host name (``db.example.com``, matched case-insensitively against the host as
written in the secret or registration); each optionally with ``:port`` (``127.0.0.1:5432``,
``[fd00::/8]:5432``). Unset, the list is ``*``.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias
from urllib.parse import urlsplit

from coffer.core import errors

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

ANY = "*"
DEFAULT_ALLOWED = ANY
#: What callers see when a target is refused or cannot be reached: the same words for every cause, so
#: that a caller cannot tell an open port from a closed one, a refused one or a missing host.
UNREACHABLE_DATABASE = "could not connect to the target database."
UNREACHABLE_FUNCTION = "could not reach the rotation function."
#: Separates what everyone may read of a recorded rotation failure from the detail shown to operators only.
DETAIL_MARK = "\nDetail (operators only): "


def with_detail(public: str, detail: str | None) -> str:
    """A rotation failure as recorded: the public words, then the operators' detail."""
    return f"{public}{DETAIL_MARK}{detail}" if detail else public


def public_part(recorded: str) -> str:
    """What a caller who is not an operator sees of a recorded rotation failure."""
    return recorded.split(DETAIL_MARK, 1)[0]


class TargetRefused(errors.InvalidParameter):
    """The policy refuses a target (the message says why: for operators and logs)."""


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One allow-list entry: a network, a host name, or any address (``*``); ``port`` None = every port."""

    network: IPNetwork | None = None
    host: str | None = None
    any_address: bool = False
    port: int | None = None

    def matches(self, *, host: str, address: IPAddress, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == host.lower().rstrip(".")
        if self.network is not None:
            return address.version == self.network.version and address in self.network
        return False


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"COFFER_ROTATION_ALLOWED_TARGETS: bad port in {entry!r}")
    return int(text)


def parse_rule(entry: str) -> AllowRule:
    """One entry of the allow-list (see the module docstring). Raises ValueError."""
    text = entry.strip()
    port: int | None = None
    if text.startswith("["):  # [v6] or [v6/len] with an optional :port
        end = text.find("]")
        if end < 0:
            raise ValueError(f"COFFER_ROTATION_ALLOWED_TARGETS: unclosed '[' in {entry!r}")
        rest = text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"COFFER_ROTATION_ALLOWED_TARGETS: bad entry {entry!r}")
            port = _port(rest[1:], entry)
        text = text[1:end]
    elif text.count(":") == 1:  # v4, v4/len, name or * with a port (a bare v6 has several colons)
        text, _, raw_port = text.partition(":")
        port = _port(raw_port, entry)
    if not text:
        raise ValueError(f"COFFER_ROTATION_ALLOWED_TARGETS: empty entry {entry!r}")
    if text == ANY:
        return AllowRule(any_address=True, port=port)
    try:
        return AllowRule(network=ipaddress.ip_network(text, strict=False), port=port)
    except ValueError:
        pass
    name = text.lower().rstrip(".")
    if not all(part and all(c.isalnum() or c in "-_" for c in part) for part in name.split(".")):
        raise ValueError(f"COFFER_ROTATION_ALLOWED_TARGETS: {entry!r} is not an address, a CIDR or a name")
    return AllowRule(host=name, port=port)


def parse_allowed(raw: str) -> tuple[AllowRule, ...]:
    """``COFFER_ROTATION_ALLOWED_TARGETS``: a JSON list of strings, or the entries separated by commas."""
    text = raw.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if items is not None:
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError("COFFER_ROTATION_ALLOWED_TARGETS must be a JSON list of strings")
            return tuple(parse_rule(i) for i in items if i.strip())
    return tuple(parse_rule(part) for part in text.split(",") if part.strip())


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port). Raises ValueError."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{endpoint!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def url_endpoint(url: str) -> str | None:
    """``[host]:port`` of a PostgreSQL or Redis URL that names a TCP host (None: no host, or a socket)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    default = 6379 if parts.scheme.startswith(("redis", "rediss")) else 5432
    return f"[{parts.hostname}]:{port or default}"


def is_socket_host(host: str) -> bool:
    """True when a driver would take ``host`` for a Unix socket, or it is not one host."""
    return (
        not host.strip()
        or host.startswith("@")
        or "/" in host
        or "\\" in host
        or "," in host
        or any(c.isspace() or ord(c) < 32 for c in host)
    )


def default_refused(address: IPAddress) -> str | None:
    """Why ``address`` is refused unless listed (None: it is not in a refused range)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    return None


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """The allow-list plus the endpoints Coffer itself serves or uses (``own``: (address or name, port))."""

    allowed: tuple[AllowRule, ...] = (AllowRule(any_address=True),)
    own: frozenset[tuple[str, int]] = field(default_factory=frozenset)

    @classmethod
    def from_settings(cls, raw: str | None, *, own_endpoints: Iterable[str] = ()) -> TargetPolicy:
        """The policy for ``COFFER_ROTATION_ALLOWED_TARGETS`` (None or blank: ``*``) and Coffer's own
        ``host:port`` endpoints (addresses or names; wildcard binds count as every loopback address)."""
        rules = parse_allowed(raw if raw and raw.strip() else DEFAULT_ALLOWED)
        own: set[tuple[str, int]] = set()
        for endpoint in own_endpoints:
            try:
                host, port = split_endpoint(endpoint)
            except ValueError:
                continue
            host = host.lower().rstrip(".")
            own.add((_normal(host), port))
            if host in ("", "0.0.0.0", "::", "*", "localhost"):
                own.update({("127.0.0.1", port), ("::1", port), ("localhost", port)})
        return cls(allowed=rules, own=frozenset(own))

    def check(self, host: str, port: int, addresses: Sequence[str]) -> None:
        """Raise TargetRefused unless the policy allows connecting to ``host``:``port`` at EVERY one of
        ``addresses`` (what ``host`` resolved to; empty: the host did not resolve)."""
        if is_socket_host(host):
            raise TargetRefused(f"{host!r} names a Unix socket or several hosts; only TCP hosts are allowed.")
        if not 0 < port < 65536:
            raise TargetRefused(f"port {port} is not a TCP port.")
        if not addresses:
            raise TargetRefused(f"{host!r} did not resolve to any address.")
        name = host.lower().rstrip(".")
        if (_normal(name), port) in self.own:
            raise TargetRefused(f"{host}:{port} is one of Coffer's own endpoints.")
        for text in addresses:
            try:
                address = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                raise TargetRefused(f"{host!r} resolved to {text!r}, which is not an IP address.") from None
            if (_normal(str(address)), port) in self.own:
                raise TargetRefused(f"{host}:{port} ({address}) is one of Coffer's own endpoints.")
            listed = [r for r in self.allowed if r.matches(host=name, address=address, port=port)]
            if listed:
                continue
            why = default_refused(address)
            if why is not None:
                raise TargetRefused(
                    f"{host}:{port} resolves to {address}, {why}; "
                    "allow it in COFFER_ROTATION_ALLOWED_TARGETS."
                )
            if not any(r.any_address and (r.port is None or r.port == port) for r in self.allowed):
                raise TargetRefused(f"{host}:{port} ({address}) is not in COFFER_ROTATION_ALLOWED_TARGETS.")


def _normal(host: str) -> str:
    """An address in its canonical text (v4-mapped v6 as v4); names as they are."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)

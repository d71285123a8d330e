"""Per-call context carried in contextvars and propagated between services as gRPC metadata."""

from __future__ import annotations

from contextvars import ContextVar

from coffer.core.principal import ROOT_ACCOUNT, Principal, legacy_principal

REQUEST_ID_HEADER = "x-request-id"
PRINCIPAL_HEADER = "x-coffer-principal"
#: The gateway-signed assertion that proves PRINCIPAL_HEADER (``coffer.rpc.assertions``).
ASSERTION_HEADER = "x-coffer-assertion"
#: The end caller's address and user agent, as the gateway saw them (trusted only with a valid assertion).
SOURCE_IP_HEADER = "x-coffer-source-ip"
USER_AGENT_HEADER = "x-coffer-user-agent"

request_id_var: ContextVar[str | None] = ContextVar("coffer_request_id", default=None)
principal_var: ContextVar[str | None] = ContextVar("coffer_principal", default=None)
peer_var: ContextVar[str | None] = ContextVar("coffer_peer", default=None)
assertion_var: ContextVar[str | None] = ContextVar("coffer_assertion", default=None)
#: The resolved caller (set by the service that resolves it; see ``current_caller``).
caller_var: ContextVar[Principal | None] = ContextVar("coffer_caller", default=None)
#: The end caller's network address and user agent as the gateway saw them (audit, ``aws:SourceIp``).
source_ip_var: ContextVar[str | None] = ContextVar("coffer_source_ip", default=None)
user_agent_var: ContextVar[str | None] = ContextVar("coffer_user_agent", default=None)
#: The access key id the end caller signed with (the gateway verified it; it travels in the assertion).
access_key_id_var: ContextVar[str | None] = ContextVar("coffer_access_key_id", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()


def current_principal() -> str | None:
    """The end caller on whose behalf this call runs (set by the gateway, forwarded to internal services)."""
    return principal_var.get()


def current_peer() -> str | None:
    """The service identity (certificate common name) of the direct caller, when it used mTLS."""
    return peer_var.get()


def current_assertion() -> str | None:
    """The verified principal assertion this call came with (forwarded on this call's own calls)."""
    return assertion_var.get()


def current_caller(default_account: str = ROOT_ACCOUNT) -> Principal | None:
    """The resolved end caller of this call: the Principal a service bound (``caller_var``), else the
    old-style principal name mapped by ``legacy_principal`` into ``default_account``; None outside a call."""
    caller = caller_var.get()
    if caller is not None:
        return caller
    name = principal_var.get()
    return legacy_principal(name, default_account) if name is not None else None


def current_source_ip() -> str | None:
    return source_ip_var.get()


def current_user_agent() -> str | None:
    return user_agent_var.get()

"""Per-call context carried in contextvars and propagated between services as gRPC metadata."""

from __future__ import annotations

from contextvars import ContextVar

REQUEST_ID_HEADER = "x-request-id"
PRINCIPAL_HEADER = "x-coffer-principal"
#: The gateway-signed assertion that proves PRINCIPAL_HEADER (``coffer.rpc.assertions``).
ASSERTION_HEADER = "x-coffer-assertion"

request_id_var: ContextVar[str | None] = ContextVar("coffer_request_id", default=None)
principal_var: ContextVar[str | None] = ContextVar("coffer_principal", default=None)
peer_var: ContextVar[str | None] = ContextVar("coffer_peer", default=None)
assertion_var: ContextVar[str | None] = ContextVar("coffer_assertion", default=None)


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

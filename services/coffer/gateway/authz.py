"""The ONE place where the gateway decides whether a caller may make a call.

Every public RPC goes through ``authorize(principal, action, resource)`` before anything is forwarded.
Today every authenticated principal is allowed; IAM-style identity and resource policies arrive in a later
issue and replace the body of this function, not its callers.
"""

from __future__ import annotations

from typing import Protocol

from coffer.core import errors

#: The resource of calls that are not about one secret or key (ListSecrets, CreateKey, GetRandomPassword).
ANY_RESOURCE = "*"


class Authorize(Protocol):
    def __call__(self, principal: str | None, action: str, resource: str) -> None: ...


def authorize(principal: str | None, action: str, resource: str) -> None:
    """Allow or refuse ``principal`` doing ``action`` (``secretsmanager:GetSecretValue``, ``kms:CreateKey``)
    on ``resource`` (the SecretId / KeyId as sent, or ``*``). Raises ``errors.AccessDenied``."""
    if not principal:
        raise errors.AccessDenied(f"An unauthenticated caller is not authorized to perform: {action}")
    # Policies come later: every authenticated principal is allowed for now.
    return None

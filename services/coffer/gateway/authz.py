"""The ONE place where the gateway decides whether a caller may make a call, and what of a reply it sees.

Every public RPC goes through ``authorize(principal, action, resource)`` before anything is forwarded, and
its reply through ``authorize.reply(principal, action, reply)`` before it is returned. Today every
authenticated principal is allowed, except that operator-only actions (registering and deleting rotation
functions: they make the rotation service connect somewhere; initialising, unsealing and sealing the kms)
need an operator principal
(``COFFER_OPERATOR_PRINCIPALS``, default ``user/admin``), and only operators read the detail of rotation
failures. IAM-style identity and resource policies arrive in a later issue and replace this class's rules,
not its callers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.core import errors
from coffer.core.targets import public_part

#: The resource of calls that are not about one secret or key (ListSecrets, CreateKey, GetRandomPassword).
ANY_RESOURCE = "*"
DEFAULT_OPERATORS = frozenset({"user/admin"})
#: The action whose replies carry rotation failures (their detail is for operators only).
DETAIL_ACTION = "secretsmanager:ListRotationAttempts"
#: Actions only operators may perform.
OPERATOR_ACTIONS = frozenset(
    {
        "secretsmanager:RegisterRotationFunction",
        "secretsmanager:DeleteRotationFunction",
        # the kms's seal: initialise it (shares shown once), unseal it, seal it
        "kms:OperatorInit",
        "kms:OperatorUnseal",
        "kms:OperatorSeal",
        # the kms's root key: rotate it, move it from the file seal to shamir or pkcs11
        "kms:OperatorRotateRoot",
        "kms:OperatorMigrateSeal",
    }
)


class Authorize(Protocol):
    def __call__(self, principal: str | None, action: str, resource: str) -> None: ...


class Authorization:
    """``authorize(principal, action, resource)`` raises ``errors.AccessDenied``; ``reply`` trims what a
    principal may not read."""

    def __init__(self, operators: Iterable[str] = DEFAULT_OPERATORS) -> None:
        self.operators = frozenset(operators)

    def __call__(self, principal: str | None, action: str, resource: str) -> None:
        """Allow or refuse ``principal`` doing ``action`` (``secretsmanager:GetSecretValue``,
        ``kms:CreateKey``) on ``resource`` (the SecretId / KeyId as sent, or ``*``)."""
        if not principal:
            raise errors.AccessDenied(f"An unauthenticated caller is not authorized to perform: {action}")
        if action in OPERATOR_ACTIONS and principal not in self.operators:
            raise errors.AccessDenied(
                f"User: {principal} is not authorized to perform: {action} on resource: {resource} "
                "(operators only)"
            )

    def reply(self, principal: str | None, action: str, reply: Any) -> Any:
        """``reply`` as ``principal`` may see it: rotation failures without their operators-only detail."""
        if action != DETAIL_ACTION or principal in self.operators:
            return reply  # the hot path: one string comparison
        if not isinstance(reply, sm.ListRotationAttemptsResponse):
            return reply
        for attempt in reply.attempts:
            if attempt.HasField("error"):
                attempt.error = public_part(attempt.error)
            for step in attempt.steps:
                if step.HasField("error"):
                    step.error = public_part(step.error)
        return reply


#: The rules with the default operators (the gateway builds its own from its settings).
authorize = Authorization()

"""Who is calling: the authenticated caller as every service sees it, and the policy request context built
from it. Pure (no I/O).

The gateway authenticates a call (an access key's signature, or a session's) and the owning service (the
store for secrets and IAM, the kms for keys) resolves the caller to a :class:`Principal`: its ARN, account,
tags and compiled identity policies. ``coffer.rpc.context.current_caller()`` returns it for the call in
progress.

Until every caller is an IAM principal, principals named the old way (``user/<name>``, ``service/<name>``)
map to principals of the deployment's account through :func:`legacy_principal`: ``user/admin`` (and every
``user/*``) is an administrator (an allow-all identity policy), ``service/<name>`` a service principal with no
identity policy.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from coffer.core.policy import Policy, RequestContext, parse_policy
from coffer.core.policy.model import PolicyKind

#: The account ``make run`` creates, and the one legacy principals belong to.
ROOT_ACCOUNT = "000000000000"

ADMIN_POLICY_TEXT = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'


class PrincipalKind(enum.Enum):
    """``aws:PrincipalType`` values Coffer issues, plus ``Service`` for its own services."""

    ACCOUNT = "Account"  # the account root
    USER = "User"
    ASSUMED_ROLE = "AssumedRole"
    SERVICE = "Service"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``arn``: ``arn:aws:iam::<acct>:user/<name>``, ``arn:aws:iam::<acct>:root``, or for a session
    ``arn:aws:sts::<acct>:assumed-role/<role>/<session>`` (then ``role_arn`` is the role's ARN).
    ``unique_id``: ``AIDA…`` for users, ``AROA…:<session>`` for sessions (``aws:userid``).
    ``policies``: the compiled inline identity policies of the user or role.
    ``service``: for Coffer's own services (``rotation``), the service name; such a principal may also carry
    a role (the rotation service runs as a role).
    """

    arn: str
    account: str
    kind: PrincipalKind
    name: str
    unique_id: str = ""
    access_key_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    policies: tuple[Policy, ...] = ()
    role_arn: str | None = None
    session_name: str | None = None
    session_expires: dt.datetime | None = None
    session_issued: dt.datetime | None = None
    service: str | None = None

    @property
    def user_name(self) -> str | None:
        return self.name if self.kind is PrincipalKind.USER else None

    def request_context(
        self,
        action: str,
        resource: str = "*",
        *,
        resource_account: str | None = None,
        keys: Mapping[str, Sequence[str]] | None = None,
    ) -> RequestContext:
        """The policy request context of this caller doing ``action`` on ``resource`` with the given
        request/resource condition keys (``aws:SourceIp``, ``secretsmanager:ResourceTag/…``, …)."""
        all_keys: dict[str, Sequence[str]] = dict(keys or {})
        if self.unique_id:
            all_keys.setdefault("aws:userid", (self.unique_id,))
        if self.session_issued is not None:
            all_keys.setdefault("aws:TokenIssueTime", (self.session_issued.isoformat(),))
        return RequestContext(
            principal_arn=self.arn,
            principal_account=self.account,
            action=action,
            resource=resource,
            resource_account=resource_account,
            principal_tags=self.tags,
            keys=all_keys,
            role_arn=self.role_arn,
            service=self.service,
        )


_ADMIN_POLICY: Policy | None = None


def admin_policy() -> Policy:
    """The allow-all identity policy (compiled once)."""
    global _ADMIN_POLICY
    if _ADMIN_POLICY is None:
        _ADMIN_POLICY = parse_policy(ADMIN_POLICY_TEXT, PolicyKind.IDENTITY, name="AdministratorAccess")
    return _ADMIN_POLICY


def legacy_principal(name: str, account: str = ROOT_ACCOUNT) -> Principal:
    """The Principal of an old-style principal name: ``user/<n>`` → an administrator user of ``account``;
    ``service/<n>`` → that service (no identity policy); an ARN → a user or session of its account with no
    policy (callers that know better resolve ARNs themselves)."""
    if name.startswith("arn:"):
        parts = name.split(":", 5)
        acct = parts[4] if len(parts) == 6 else account
        res = parts[5] if len(parts) == 6 else name
        if res.startswith("assumed-role/"):
            _, role, session = [*res.split("/", 2), "", ""][:3]
            return Principal(
                arn=name,
                account=acct,
                kind=PrincipalKind.ASSUMED_ROLE,
                name=role,
                role_arn=f"arn:aws:iam::{acct}:role/{role}",
                session_name=session,
            )
        if res == "root":
            return Principal(arn=name, account=acct, kind=PrincipalKind.ACCOUNT, name="root")
        return Principal(arn=name, account=acct, kind=PrincipalKind.USER, name=res.rsplit("/", 1)[-1])
    kind, _, short = name.partition("/")
    if kind == "service":
        return Principal(
            arn=f"arn:aws:iam::{account}:role/coffer-service/{short}",
            account=account,
            kind=PrincipalKind.SERVICE,
            name=short,
            service=short,
        )
    return Principal(
        arn=f"arn:aws:iam::{account}:user/{short or name}",
        account=account,
        kind=PrincipalKind.USER,
        name=short or name,
        policies=(admin_policy(),),
    )

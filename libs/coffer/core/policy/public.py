"""Resource-policy checks: "grants broad access" (BlockPublicPolicy) and ValidateResourcePolicy. Pure.

Broad access is a deterministic approximation of AWS's automated reasoning. A policy is broad when one of its
statements is; a statement is broad when it is an Allow, its principal is ``*`` (or it uses NotPrincipal), and
no *restricting* condition narrows it. A restricting condition is a positive operator without IfExists (string
equals/equals-ignore-case/like, ARN equals/like or IpAddress, plain or ForAnyValue) on one of the keys that
pin the caller down (principal ARN/account/organisation, source account/ARN/owner/VPC/endpoint, user id,
service name, source IP) whose every value is fixed: no wildcard in an account id or a whole-value key,
ARNs with a fixed account, user ids only with a trailing ``:*``, and no ``/0`` network. Deny statements and
statements naming accounts, users, roles or services are never broad.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coffer.core.errors import Validation
from coffer.core.policy.evaluate import Match, statement_applies
from coffer.core.policy.glob import has_wildcard
from coffer.core.policy.grammar import load_json, parse_policy
from coffer.core.policy.model import (
    Condition,
    Family,
    MalformedPolicy,
    Policy,
    PolicyKind,
    PrincipalForm,
    PublicPolicy,
    Qualifier,
    RequestContext,
    Statement,
)

_ACCOUNT_KEYS = frozenset({"aws:principalaccount", "aws:sourceaccount", "aws:sourceowner"})
_WHOLE_VALUE_KEYS = frozenset(
    {"aws:principalorgid", "aws:sourcevpc", "aws:sourcevpce", "aws:principalservicename"}
)
_ARN_KEYS = frozenset({"aws:principalarn", "aws:sourcearn"})
_RESTRICTING_KEYS = (
    _ACCOUNT_KEYS
    | _WHOLE_VALUE_KEYS
    | _ARN_KEYS
    | {
        "aws:principalorgpaths",
        "aws:userid",
        "aws:sourceip",
    }
)
_RESTRICTING_FAMILIES = frozenset(
    {Family.STRING, Family.STRING_FOLD, Family.STRING_LIKE, Family.ARN, Family.IP}
)
_ACCOUNT_ID = re.compile(r"[0-9]{12}")


def _fixed(c: Condition) -> bool:
    for raw in c.raw:
        if c.has_vars and "${" in raw:
            return False
        if c.key in _ACCOUNT_KEYS:
            if not _ACCOUNT_ID.fullmatch(raw):
                return False
        elif c.key in _WHOLE_VALUE_KEYS:
            if has_wildcard(raw) or not raw:
                return False
        elif c.key in _ARN_KEYS:
            parts = raw.split(":", 5)
            if len(parts) != 6 or not _ACCOUNT_ID.fullmatch(parts[4]):
                return False
        elif c.key == "aws:principalorgpaths":
            first = raw.split("/", 1)[0]
            if not first or has_wildcard(first):
                return False
        elif c.key == "aws:userid":
            stem = raw[:-2] if raw.endswith(":*") else raw
            if not stem or has_wildcard(stem):
                return False
        elif c.key == "aws:sourceip" and raw.endswith("/0"):
            return False
    return True


def _restricts(c: Condition) -> bool:
    if c.negated or c.if_exists or c.qualifier is Qualifier.ALL:
        return False
    if c.family not in _RESTRICTING_FAMILIES or c.key not in _RESTRICTING_KEYS:
        return False
    if c.family is Family.IP and c.key != "aws:sourceip":
        return False
    return _fixed(c)


def broad_statements(policy: Policy) -> list[Statement]:
    """The statements of a resource policy that grant broad access."""
    out: list[Statement] = []
    for st in policy.statements:
        if not st.allow or st.principals is None:
            continue
        wildcard = st.not_principal or any(p.form is PrincipalForm.ANY for p in st.principals)
        if not wildcard:
            continue
        if any(_restricts(c) for c in st.conditions):
            continue
        out.append(st)
    return out


def grants_broad_access(policy: Policy) -> bool:
    return bool(broad_statements(policy))


# --- ValidateResourcePolicy ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValidationError:
    check_name: str  # SYNTAX | BROAD_ACCESS | LOCKOUT
    error_message: str


@dataclass(frozen=True, slots=True)
class ValidationResult:
    passed: bool
    errors: tuple[ValidationError, ...]


def _where(st: Statement) -> str:
    return f"statement {st.index}" + (f" (Sid {st.sid})" if st.sid else "")


_LOCKOUT_ACTIONS = ("secretsmanager:PutResourcePolicy", "secretsmanager:DeleteResourcePolicy")


def validate_resource_policy(
    text: str,
    *,
    caller_arn: str | None = None,
    caller_account: str | None = None,
    secret_arn: str | None = None,
) -> ValidationResult:
    """Check a resource policy without storing it.

    Unparseable JSON raises ``MalformedPolicy`` (as PutResourcePolicy would); any other grammar violation is a
    SYNTAX entry. BROAD_ACCESS entries name each broad statement. LOCKOUT: the policy would explicitly deny
    the caller (given ``caller_arn`` and ``secret_arn``), or without them every principal,
    PutResourcePolicy or DeleteResourcePolicy on the secret.
    """
    try:
        load_json(text)
    except (ValueError, RecursionError) as e:
        raise MalformedPolicy(f"The policy is not valid JSON: {e}") from None
    try:
        policy = parse_policy(text, PolicyKind.RESOURCE)
    except MalformedPolicy as e:
        return ValidationResult(False, (ValidationError("SYNTAX", e.detail),))
    errors: list[ValidationError] = [
        ValidationError("BROAD_ACCESS", f"The policy grants broad access in {_where(st)}.")
        for st in broad_statements(policy)
    ]
    for st in policy.statements:
        if st.allow:
            continue
        for action in _LOCKOUT_ACTIONS:
            if caller_arn is not None and secret_arn is not None:
                ctx = RequestContext(
                    principal_arn=caller_arn,
                    principal_account=caller_account or caller_arn.split(":")[4],
                    action=action,
                    resource=secret_arn,
                )
                try:
                    hit = statement_applies(st, ctx) is not Match.NONE
                except Exception:
                    hit = True
            else:
                hit = _denies_everyone(st, action)
            if hit:
                errors.append(
                    ValidationError("LOCKOUT", f"The policy denies {action} to the caller in {_where(st)}.")
                )
                break
    return ValidationResult(not errors, tuple(errors))


def _denies_everyone(st: Statement, action: str) -> bool:
    if st.conditions or st.not_principal or st.principals is None:
        return False
    if not any(p.form is PrincipalForm.ANY for p in st.principals):
        return False
    hit = any(g.match(action.casefold()) for g in st.actions)
    if hit == st.not_action:
        return False
    covers = any(r.parts is None for r in st.resources)
    return covers != st.not_resource


# --- PutResourcePolicy's pipeline ---------------------------------------------------------------------------

#: A secret's resource policy is 1 to 20,480 characters of raw text, whitespace included.
MAX_RESOURCE_POLICY_LENGTH = 20480


def check_resource_policy_for_put(text: str, *, block_public_policy: bool = False, name: str = "") -> Policy:
    """PutResourcePolicy's checks in AWS's order, the first failure winning: the length (ValidationException),
    the grammar (``This policy has invalid syntax.``), the principals (``This resource policy contains an
    unsupported principal``), and, only when ``block_public_policy``, broad access (PublicPolicyException).
    Returns the compiled policy. Whether each named principal exists is the caller's check, on
    ``named_principals(policy)``."""
    if not 1 <= len(text) <= MAX_RESOURCE_POLICY_LENGTH:
        raise Validation(
            "1 validation error detected: Value at 'resourcePolicy' failed to satisfy constraint: "
            f"Member must have length {'greater' if not text else 'less'} than or equal to "
            f"{1 if not text else MAX_RESOURCE_POLICY_LENGTH}"
        )
    policy = parse_policy(text, PolicyKind.RESOURCE, name=name)
    if block_public_policy and grants_broad_access(policy):
        raise PublicPolicy()
    return policy


def named_principals(policy: Policy) -> list[str]:
    """The user, role and session ARNs a resource policy names (accounts, ``*`` and services excluded), in
    document order without repeats - what the caller must resolve before storing the policy."""
    out: list[str] = []
    for st in policy.statements:
        for p in st.principals or ():
            if (
                p.form in (PrincipalForm.USER, PrincipalForm.ROLE, PrincipalForm.SESSION)
                and p.value not in out
            ):
                out.append(p.value)
    return out

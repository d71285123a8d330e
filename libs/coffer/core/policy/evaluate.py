"""Evaluating compiled policies against a request: conditions, statements, and the decision. Pure.

Decision order:

1. an error while evaluating is a deny (fail closed);
2. an applicable Deny in any identity policy or in the resource policy is an explicit deny - it always wins;
3. same account: an applicable Allow in the resource policy whose principal names the caller directly (``*``,
   the user, the role or its session, the service) suffices; an Allow that names only the account delegates to
   the identity policies and adds nothing by itself;
4. same account: an applicable Allow in an identity policy suffices; the account root is allowed anyway;
5. across accounts both are needed: an Allow in the caller's identity policies (or the caller is its account's
   root) and an Allow in the resource policy naming the caller or its account; and when the action uses the
   secret's KMS key, that key must be customer managed (the default key cannot be shared) with a key policy
   that lets the caller's account use it;
6. otherwise an implicit deny.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coffer.core.errors import AccessDenied
from coffer.core.policy.glob import Glob
from coffer.core.policy.grammar import arn_globs, parse_binary, parse_date, parse_decimal
from coffer.core.policy.model import (
    ArnPattern,
    Compare,
    Condition,
    EvaluationError,
    Family,
    Policy,
    PrincipalEntry,
    PrincipalForm,
    Qualifier,
    RequestContext,
    Statement,
    Template,
    Var,
)

# --- variables ---------------------------------------------------------------------------------------------


def resolve(tpl: Template, ctx: RequestContext) -> list[Any] | None:
    """Substitute variables: the substituted text becomes literal tokens. None when a variable has no value
    and no default (the value is then "null": it matches nothing)."""
    out: list[Any] = []
    for t in tpl:
        if isinstance(t, Var):
            vals = ctx.lookup(t.key)
            if len(vals) == 1:
                out.append(vals[0])
            elif not vals and t.default is not None:
                out.append(t.default)
            else:
                return None
        else:
            out.append(t)
    return out


def _text(tokens: list[Any]) -> str:
    return "".join(t for t in tokens if isinstance(t, str))


# --- conditions --------------------------------------------------------------------------------------------


def _compiled_values(c: Condition, ctx: RequestContext) -> Sequence[Any]:
    if not c.has_vars:
        return c.values
    out: list[Any] = []
    for v in c.values:
        if not isinstance(v, tuple) or not any(isinstance(x, Var) for x in v):
            out.append(v)
            continue
        tokens = resolve(v, ctx)
        if tokens is None:
            continue  # unresolved: matches no request value
        if c.family is Family.STRING_LIKE:
            out.append(Glob(tokens))
        elif c.family is Family.ARN:
            out.append(arn_globs(tuple(tokens)) or ())
        elif c.family is Family.STRING_FOLD or c.family is Family.BOOL:
            out.append(_text(tokens).casefold())
        else:
            out.append(_text(tokens))
    return out


def _ordered(compare: Compare, a: Any, b: Any) -> bool:
    if compare is Compare.EQ:
        return bool(a == b)
    if compare is Compare.LT:
        return bool(a < b)
    if compare is Compare.LE:
        return bool(a <= b)
    if compare is Compare.GT:
        return bool(a > b)
    return bool(a >= b)


def _matches(c: Condition, request_value: str, values: Sequence[Any]) -> bool:
    """Does one request value match any of the policy values (the positive form of the operator)?"""
    fam = c.family
    if fam is Family.STRING:
        return request_value in values
    if fam is Family.STRING_FOLD:
        return request_value.casefold() in values
    if fam is Family.STRING_LIKE:
        return any(g.match(request_value) for g in values)
    if fam is Family.BOOL:
        return request_value.casefold() in values
    if fam is Family.ARN:
        parts = request_value.split(":", 5)
        if len(parts) != 6:
            return False
        return any(len(g) == 6 and all(p.match(s) for p, s in zip(g, parts, strict=True)) for g in values)
    if fam is Family.NUMERIC:
        d = parse_decimal(request_value)
        if d is None:
            raise EvaluationError(f"{c.key_as_written} value {request_value!r} is not a number")
        return any(_ordered(c.compare, d, v) for v in values)
    if fam is Family.DATE:
        t = parse_date(request_value)
        if t is None:
            raise EvaluationError(f"{c.key_as_written} value {request_value!r} is not a date")
        return any(_ordered(c.compare, t, v) for v in values)
    if fam is Family.BINARY:
        b = parse_binary(request_value)
        if b is None:
            raise EvaluationError(f"{c.key_as_written} value is not base64")
        return b in values
    if fam is Family.IP:
        try:
            ip = ipaddress.ip_address(request_value.strip())
        except ValueError:
            raise EvaluationError(
                f"{c.key_as_written} value {request_value!r} is not an IP address"
            ) from None
        return any(ip.version == n.version and ip in n for n in values)
    raise EvaluationError(f"unknown operator family {fam}")  # pragma: no cover


def condition_holds(c: Condition, ctx: RequestContext) -> bool:
    vals = ctx.lookup(c.key, c.key_as_written)
    if c.family is Family.NULL:
        # Null: "true" holds when the key is absent (or an empty set), "false" when present; values OR-ed.
        return ("true" if not vals else "false") in c.values
    if not vals:
        if c.if_exists or c.qualifier is Qualifier.ALL:
            return True  # IfExists passes a missing key; ForAllValues holds on the empty set
        if c.qualifier is Qualifier.ANY:
            return False
        return c.negated  # a missing key fails a positive operator and passes a negated one
    values = _compiled_values(c, ctx)

    def sat(v: str) -> bool:
        m = _matches(c, v, values)
        return not m if c.negated else m

    if c.qualifier is Qualifier.ANY:
        return any(sat(v) for v in vals)
    # ForAllValues, and a negated plain operator on several values (none may match); a positive plain
    # operator on several values holds when any does.
    if c.qualifier is Qualifier.ALL or c.negated:
        return all(sat(v) for v in vals)
    return any(sat(v) for v in vals)


# --- statements ---------------------------------------------------------------------------------------------


def _resource_matches(p: ArnPattern, ctx: RequestContext) -> bool:
    if p.parts is None:
        return True  # "*"
    parts = ctx.resource_parts
    if parts is None:
        return False
    globs = p.parts
    if p.tail is not None:
        tokens = resolve(p.tail, ctx)
        if tokens is None:
            return False
        globs = (*globs, Glob(tokens))
    return all(g.match(s) for g, s in zip(globs, parts, strict=True))


class Match(enum.Enum):
    NONE = 0
    ACCOUNT = 1  # matched only through an account principal (delegation)
    DIRECT = 2


def _principal_chain(ctx: RequestContext) -> set[str]:
    chain = {ctx.principal_arn, f"arn:aws:iam::{ctx.principal_account}:root"}
    if ctx.role_arn:
        chain.add(ctx.role_arn)
    if ctx.service:
        chain = {ctx.service}
    return chain


def _principal_match(entries: tuple[PrincipalEntry, ...], ctx: RequestContext) -> Match:
    best = Match.NONE
    for e in entries:
        f = e.form
        if f is PrincipalForm.ANY:
            return Match.DIRECT
        if f is PrincipalForm.SERVICE:
            if ctx.service == e.value:
                return Match.DIRECT
        elif ctx.service is not None:
            continue
        elif f is PrincipalForm.ACCOUNT:
            if ctx.principal_account == e.account:
                best = Match.ACCOUNT
        elif f is PrincipalForm.ROLE:
            if e.value in (ctx.principal_arn, ctx.role_arn):
                return Match.DIRECT
        elif e.value == ctx.principal_arn:  # user, session
            return Match.DIRECT
    return best


def _not_principal_applies(entries: tuple[PrincipalEntry, ...], ctx: RequestContext) -> bool:
    """A NotPrincipal Deny spares the caller only when the list names its whole chain (user + account, or
    session + role + account); a partial list keeps denying."""
    named = {e.value for e in entries}
    if "*" in named:
        return False
    return not _principal_chain(ctx) <= named


def statement_applies(st: Statement, ctx: RequestContext) -> Match:
    """Does the statement apply to this request, and how did its principal match (resource policies)?"""
    action = ctx.action_folded
    hit = False
    for g in st.actions:
        if g.match(action):
            hit = True
            break
    if hit == st.not_action:
        return Match.NONE
    hit = False
    for p in st.resources:
        if _resource_matches(p, ctx):
            hit = True
            break
    if hit == st.not_resource:
        return Match.NONE
    how = Match.DIRECT
    if st.principals is not None:
        if st.not_principal:
            if not _not_principal_applies(st.principals, ctx):
                return Match.NONE
        else:
            how = _principal_match(st.principals, ctx)
            if how is Match.NONE:
                return Match.NONE
    for c in st.conditions:
        if not condition_holds(c, ctx):
            return Match.NONE
    return how


# --- decision -----------------------------------------------------------------------------------------------


class Reason(enum.Enum):
    ALLOW_RESOURCE = "AllowResource"
    ALLOW_IDENTITY = "AllowIdentity"
    ALLOW_ROOT = "RootAllow"
    ALLOW_CROSS_ACCOUNT = "AllowCrossAccount"
    EXPLICIT_DENY_IDENTITY = "ExplicitDenyIdentity"
    EXPLICIT_DENY_RESOURCE = "ExplicitDenyResource"
    NO_IDENTITY_ALLOW = "ImplicitDeny"  # no identity-based policy allows the action
    NO_RESOURCE_ALLOW = "NoResourceAllow"  # cross account: no resource-based policy allows it
    KMS_DEFAULT_KEY = "KmsDefaultKey"  # cross account: the secret uses the default (AWS managed) key
    KMS_KEY_POLICY = "KmsKeyPolicyDenies"  # cross account: the key policy does not allow the caller's account
    EVALUATION_ERROR = "EvaluationError"


@dataclass(frozen=True, slots=True)
class Citation:
    """A statement that decided: ``source`` is "identity" or "resource"; ``policy`` its index in the list."""

    source: str
    policy: int
    policy_name: str
    statement: int
    sid: str | None


@dataclass(frozen=True, slots=True)
class KeyAccess:
    """What the caller knows about the secret's KMS key, for cross-account requests that use it."""

    customer_managed: bool
    key_policy_allows_account: bool
    key_arn: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: Reason
    message: str  # the AccessDeniedException text; "" when allowed
    statements: tuple[Citation, ...] = ()
    detail: str = ""  # the evaluation error, if any

    def error(self) -> AccessDenied:
        return AccessDenied(self.message)


def denial_message(ctx: RequestContext, reason: Reason, key_arn: str | None = None) -> str:
    """AWS's AccessDeniedException text for a denial; resource-less actions omit ``on resource:``."""
    if reason is Reason.KMS_DEFAULT_KEY:
        return "Access to KMS is not allowed"
    if reason is Reason.KMS_KEY_POLICY:
        target = f" on resource: {key_arn}" if key_arn else ""
        return (
            f"User: {ctx.principal_arn} is not authorized to perform: kms:Decrypt{target} "
            "because no resource-based policy allows the kms:Decrypt action"
        )
    head = f"User: {ctx.principal_arn} is not authorized to perform: {ctx.action}"
    if not ctx.resource_less:
        head += f" on resource: {ctx.resource}"
    if reason is Reason.EXPLICIT_DENY_IDENTITY:
        return f"{head} with an explicit deny in an identity-based policy"
    if reason is Reason.EXPLICIT_DENY_RESOURCE:
        return f"{head} with an explicit deny in a resource-based policy"
    if reason is Reason.NO_RESOURCE_ALLOW:
        return f"{head} because no resource-based policy allows the {ctx.action} action"
    return f"{head} because no identity-based policy allows the {ctx.action} action"


def _deny(ctx: RequestContext, reason: Reason, cited: list[Citation], key_arn: str | None = None) -> Decision:
    return Decision(False, reason, denial_message(ctx, reason, key_arn), tuple(cited))


def is_root(ctx: RequestContext) -> bool:
    return ctx.principal_arn.endswith(":root") and ctx.principal_arn.split(":")[2:3] == ["iam"]


def identity_matches(
    ctx: RequestContext, identity: Sequence[Policy]
) -> tuple[list[Citation], list[Citation]]:
    """The identity-policy statements that apply to the request: (denies, allows)."""
    deny: list[Citation] = []
    allow: list[Citation] = []
    for pi, pol in enumerate(identity):
        for st in pol.statements:
            if statement_applies(st, ctx) is not Match.NONE:
                cite = Citation("identity", pi, pol.name, st.index, st.sid)
                (allow if st.allow else deny).append(cite)
    return deny, allow


def resource_matches(
    ctx: RequestContext, resource: Policy | None
) -> tuple[list[Citation], list[Citation], list[Citation]]:
    """The resource-policy statements that apply to the request: (denies, allows naming the principal
    directly, allows reaching it through its account)."""
    deny: list[Citation] = []
    direct: list[Citation] = []
    account: list[Citation] = []
    if resource is not None:
        for st in resource.statements:
            how = statement_applies(st, ctx)
            if how is Match.NONE:
                continue
            cite = Citation("resource", 0, resource.name, st.index, st.sid)
            if not st.allow:
                deny.append(cite)
            else:
                (direct if how is Match.DIRECT else account).append(cite)
    return deny, direct, account


def evaluate(
    ctx: RequestContext,
    identity: Sequence[Policy] = (),
    resource: Policy | None = None,
    *,
    key: KeyAccess | None = None,
) -> Decision:
    """Decide one request. Never raises: any error is a deny with reason EvaluationError."""
    try:
        return _evaluate(ctx, identity, resource, key)
    except Exception as e:  # fail closed, whatever went wrong
        return Decision(
            False, Reason.EVALUATION_ERROR, denial_message(ctx, Reason.NO_IDENTITY_ALLOW), (), detail=str(e)
        )


def _evaluate(
    ctx: RequestContext, identity: Sequence[Policy], resource: Policy | None, key: KeyAccess | None
) -> Decision:
    id_deny, id_allow = identity_matches(ctx, identity)
    res_deny, res_direct, res_account = resource_matches(ctx, resource)

    if id_deny:
        return _deny(ctx, Reason.EXPLICIT_DENY_IDENTITY, id_deny + res_deny)
    if res_deny:
        return _deny(ctx, Reason.EXPLICIT_DENY_RESOURCE, res_deny)

    root = is_root(ctx)
    same_account = ctx.resource_account is None or ctx.resource_account == ctx.principal_account
    if same_account:
        if res_direct:
            return Decision(True, Reason.ALLOW_RESOURCE, "", tuple(res_direct))
        if id_allow:
            return Decision(True, Reason.ALLOW_IDENTITY, "", tuple(id_allow))
        if root:
            return Decision(True, Reason.ALLOW_ROOT, "")
        return _deny(ctx, Reason.NO_IDENTITY_ALLOW, [])

    # across accounts: both sides must allow
    if not id_allow and not root:
        return _deny(ctx, Reason.NO_IDENTITY_ALLOW, [])
    res_allow = res_direct + res_account
    if not res_allow:
        return _deny(ctx, Reason.NO_RESOURCE_ALLOW, id_allow)
    if key is not None:
        if not key.customer_managed:
            return _deny(ctx, Reason.KMS_DEFAULT_KEY, id_allow + res_allow)
        if not key.key_policy_allows_account:
            return _deny(ctx, Reason.KMS_KEY_POLICY, id_allow + res_allow, key.key_arn)
    return Decision(True, Reason.ALLOW_CROSS_ACCOUNT, "", tuple(id_allow + res_allow))

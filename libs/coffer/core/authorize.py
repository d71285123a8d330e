"""The one call every service makes to decide a request: :func:`authorize` evaluates the caller's identity
policies (and a resource policy, when the resource has one) with the policy engine and raises AWS's
``AccessDeniedException`` when the answer is no. Pure: the caller brings the Principal, the resource's ARN,
account, policy and condition keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from coffer.core.policy import Decision, KeyAccess, Policy, evaluate
from coffer.core.principal import Principal


def decide(
    caller: Principal,
    action: str,
    resource: str = "*",
    *,
    resource_account: str | None = None,
    resource_policy: Policy | None = None,
    keys: Mapping[str, Sequence[str]] | None = None,
    key: KeyAccess | None = None,
) -> Decision:
    """The decision for ``caller`` doing ``action`` on ``resource`` (never raises)."""
    ctx = caller.request_context(action, resource, resource_account=resource_account, keys=keys)
    return evaluate(ctx, caller.policies, resource_policy, key=key)


def authorize(
    caller: Principal,
    action: str,
    resource: str = "*",
    *,
    resource_account: str | None = None,
    resource_policy: Policy | None = None,
    keys: Mapping[str, Sequence[str]] | None = None,
    key: KeyAccess | None = None,
) -> Decision:
    """Like :func:`decide`, but raise ``errors.AccessDenied`` (AWS's message) on a denial."""
    decision = decide(
        caller,
        action,
        resource,
        resource_account=resource_account,
        resource_policy=resource_policy,
        keys=keys,
        key=key,
    )
    if not decision.allowed:
        raise decision.error()
    return decision

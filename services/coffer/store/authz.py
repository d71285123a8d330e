"""The store decides every ``secretsmanager:*`` call it serves (iam-policies.md §2-§4), over
``coffer.core.authorize.decide`` and the caller ``coffer.rpc.context`` resolved.

Who is decided: the public calls, i.e. those with an end caller (``current_caller()``). Internal work
(housekeeping, the replicator's peer calls, a use case calling another inside the store) has no end caller
and is not decided; neither are Coffer's own legacy service principals (``service/<name>``, kind Service,
no identity policy: the rotation service's calls through the gateway) until they get roles (helper A2).

Order (§3.4): authorize before existence checks. A found secret is decided on its full ARN with its tags,
resource policy and account; a missing one on the SecretId exactly as supplied (no existence oracle).
Across accounts the engine needs both an identity and a resource-policy allow, and the secret's KMS key
must be customer managed and its key policy must let the caller's account use it: :class:`KeyPolicyCheck`.

Speed: decisions are cached (bounded) by caller identity + identity policies, action, resource ARN, the
secret's ``change_seq`` (bumped by every change, tags and resource policy included) and the request keys,
only when no policy involved looks at the clock or the source address, and never across accounts (the key
policy may change without the secret changing).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

from coffer.clock import Clock
from coffer.core.authorize import decide
from coffer.core.policy import Decision, KeyAccess, Policy, PolicyCache, PolicyKind
from coffer.core.principal import Principal, PrincipalKind
from coffer.core.secret_keys import (
    Keys,
    RequestParams,
    SecretFacts,
    global_keys,
    policy_is_volatile,
    request_keys,
    secret_keys,
)
from coffer.rpc.context import current_caller, source_ip_var

SM = "secretsmanager:"


class KeyPolicyCheck(Protocol):
    """What a cross-account request learns about the secret's KMS key.

    The hook for helper D's kms key policies: the real check asks (a cached copy of) the key's policy
    whether ``caller_account`` may use the key (kms:Decrypt / kms:GenerateDataKey) and answers
    ``KeyAccess(customer_managed=..., key_policy_allows_account=..., key_arn=...)``. Called only for
    cross-account requests, so it may do I/O."""

    async def __call__(self, secret: SecretFacts, caller_account: str) -> KeyAccess: ...


class DefaultKeyPolicyCheck:
    """Until key policies exist: a customer-managed key (the secret names one) allows every account; the
    default key (``aws/secretsmanager``) never works across accounts."""

    async def __call__(self, secret: SecretFacts, caller_account: str) -> KeyAccess:
        return KeyAccess(
            customer_managed=secret.kms_key_id is not None,
            key_policy_allows_account=True,
            key_arn=secret.kms_key_arn,
        )


def decided(caller: Principal | None) -> bool:
    """Whether calls of ``caller`` are decided by policies (not internal, not a legacy service)."""
    return caller is not None and not (caller.kind is PrincipalKind.SERVICE and not caller.policies)


def arn_account(secret_id: str, default: str) -> str:
    parts = secret_id.split(":", 5)
    return parts[4] if secret_id.startswith("arn:") and len(parts) == 6 else default


class StoreAuthz:
    def __init__(
        self,
        *,
        region: str,
        account: str,
        clock: Clock,
        key_policy: KeyPolicyCheck | None = None,
        capacity: int = 8192,
    ) -> None:
        self._region = region
        self._account = account
        self._clock = clock
        self.key_policy: KeyPolicyCheck = key_policy or DefaultKeyPolicyCheck()
        self._capacity = capacity
        self._decisions: OrderedDict[tuple[Any, ...], tuple[tuple[Policy, ...], Decision]] = OrderedDict()
        self._volatile: dict[int, tuple[Policy, bool]] = {}
        self._policies = PolicyCache(capacity=1024)
        self.hits = 0
        self.misses = 0
        #: ``COFFER_UNSAFE_BENCH_BYPASS`` (make bench's baseline only): decide nothing.
        self.bypass = False

    # --- the caller ---------------------------------------------------------------------------------------

    def caller(self) -> Principal | None:
        """The caller to decide for, or None when this call is not decided."""
        if self.bypass:
            return None
        caller = current_caller(self._account)
        return caller if decided(caller) else None

    def caller_account(self) -> str:
        """The account a name resolves in: the caller's, or the deployment's for internal work."""
        caller = current_caller(self._account)
        return caller.account if caller is not None else self._account

    # --- decisions ----------------------------------------------------------------------------------------

    def _is_volatile(self, policy: Policy) -> bool:
        hit = self._volatile.get(id(policy))
        if hit is not None and hit[0] is policy:
            return hit[1]
        answer = policy_is_volatile(policy.text)
        if len(self._volatile) > 4096:
            self._volatile.clear()
        self._volatile[id(policy)] = (policy, answer)
        return answer

    def resource_policy(self, secret: SecretFacts | None) -> Policy | None:
        if secret is None or not secret.resource_policy:
            return None
        return self._policies.get(secret.resource_policy, PolicyKind.RESOURCE, name=secret.arn)

    def _globals(self) -> Keys:
        return global_keys(now=self._clock.now(), region=self._region, source_ip=source_ip_var.get())

    async def check(
        self,
        caller: Principal,
        action: str,
        secret_id: str,
        secret: SecretFacts | None,
        params: RequestParams | None = None,
        *,
        tags: Sequence[Any] | None = None,
    ) -> Decision:
        """Decide ``action`` on one secret (found: ``secret``; missing: the SecretId as supplied); raise
        AccessDeniedException on a denial."""
        decision = await self.decide(caller, action, secret_id, secret, params, tags=tags)
        if not decision.allowed:
            raise decision.error()
        return decision

    async def decide(
        self,
        caller: Principal,
        action: str,
        secret_id: str,
        secret: SecretFacts | None,
        params: RequestParams | None = None,
        *,
        tags: Sequence[Any] | None = None,
    ) -> Decision:
        req = request_keys(params) if params is not None else {}
        policy = self.resource_policy(secret)
        if secret is not None:
            resource, account = secret.arn, secret.account
        else:
            resource, account = secret_id, arn_account(secret_id, caller.account)
        cross = account != caller.account
        cacheable = (
            secret is not None
            and not cross
            and tags is None
            and not any(self._is_volatile(p) for p in caller.policies)
            and (policy is None or not self._is_volatile(policy))
        )
        cache_key: tuple[Any, ...] | None = None
        if cacheable:
            assert secret is not None
            cache_key = (
                caller.arn,
                caller.unique_id,
                caller.role_arn,
                tuple(sorted(caller.tags.items())),
                tuple(id(p) for p in caller.policies),
                action,
                resource,
                secret.change_seq,
                secret.resource_policy,
                tuple(sorted(req.items())),
            )
            hit = self._decisions.get(cache_key)
            if (
                hit is not None
                and len(hit[0]) == len(caller.policies)
                and all(a is b for a, b in zip(hit[0], caller.policies, strict=True))
            ):
                self._decisions.move_to_end(cache_key)
                self.hits += 1
                return hit[1]
        self.misses += 1
        keys = self._globals()
        if secret is not None:
            keys.update(secret_keys(secret, tags=tags))
        keys.update(req)
        key_access: KeyAccess | None = None
        if cross and secret is not None:
            key_access = await self.key_policy(secret, caller.account)
        decision = decide(
            caller,
            action,
            resource,
            resource_account=account,
            resource_policy=policy,
            keys=keys,
            key=key_access,
        )
        if cache_key is not None:
            self._decisions[cache_key] = (caller.policies, decision)
            if len(self._decisions) > self._capacity:
                self._decisions.popitem(last=False)
        return decision

    def check_global(self, caller: Principal, action: str) -> None:
        """Decide a resource-less action (``ListSecrets``, ``BatchGetSecretValue``): resource ``*``."""
        decision = decide(caller, action, "*", keys=self._globals())
        if not decision.allowed:
            raise decision.error()

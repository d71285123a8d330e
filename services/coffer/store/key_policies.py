"""The store's view of KMS key policies: Secrets Manager uses a secret's customer-managed key on behalf of the
caller, so the caller must be allowed ``kms:Decrypt`` (reads) or ``kms:GenerateDataKey`` (writes) by the key's
policy (AWS KMS's rule: ``coffer.core.policy.keypolicy``). The AWS-managed default key is exempt: its policy
lets every principal of its account use it through Secrets Manager.

Each key's policy is fetched once from the kms (``KeyEventsService/DescribeKeyPolicy``) and cached in memory;
the kms's key-change stream (``coffer.store.key_events``) evicts a key when its state or policy changes and
everything when the stream (re)opens. So the steady state has no network hop: :meth:`KeyPolicies.check` is
synchronous and decides from memory; :meth:`KeyPolicies.load` fills the cache first when a key is new.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import structlog

from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.core import errors
from coffer.core.policy import KeyAccess, Policy
from coffer.core.policy.keypolicy import allows_account, decide_key, parse_key_policy
from coffer.core.principal import Principal, PrincipalKind
from coffer.core.secret_keys import SecretFacts

log = structlog.get_logger("coffer.store.key_policies")

KeyAction = Literal["kms:Decrypt", "kms:GenerateDataKey"]
#: What Secrets Manager answers when the caller may not use the secret's KMS key (aws-kms.md §6, [R]).
ACCESS_TO_KMS_DENIED = "Access to KMS is not allowed"


@dataclass(frozen=True, slots=True)
class KeyPolicyEntry:
    key_arn: str
    account: str
    aws_managed: bool
    policy: Policy


#: Fetch one key's policy from the kms (any key form → the entry under the key's ARN).
KeyPolicySource = Callable[[str], Awaitable[KeyPolicyEntry]]


def grpc_source(stub: kms_pb2_grpc.KeyEventsServiceStub, *, timeout: float = 10.0) -> KeyPolicySource:
    async def fetch(key_id: str) -> KeyPolicyEntry:
        resp = await stub.DescribeKeyPolicy(kms_pb2.DescribeKeyPolicyRequest(key_id=key_id), timeout=timeout)
        return KeyPolicyEntry(
            key_arn=resp.key_arn,
            account=resp.account_id,
            aws_managed=resp.key_manager == "AWS",
            policy=parse_key_policy(resp.policy),
        )

    return fetch


class KeyPolicies:
    """Key policies cached in memory, evicted by the kms's key-change stream."""

    def __init__(self, source: KeyPolicySource) -> None:
        self._source = source
        self._entries: dict[str, KeyPolicyEntry] = {}
        # bumped by every eviction: a fetch that raced an eviction is not cached (it may be stale)
        self._generation = 0
        self._inflight: dict[str, asyncio.Future[KeyPolicyEntry]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def evict(self, key_arn: str) -> bool:
        self._generation += 1
        return self._entries.pop(key_arn, None) is not None

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()

    def cached(self, key_arn: str) -> KeyPolicyEntry | None:
        return self._entries.get(key_arn)

    async def load(self, key_arn: str) -> KeyPolicyEntry:
        """The key's policy, from memory or (once) from the kms."""
        entry = self._entries.get(key_arn)
        if entry is not None:
            return entry
        pending = self._inflight.get(key_arn)
        if pending is not None:
            return await asyncio.shield(pending)
        generation = self._generation
        fut: asyncio.Future[KeyPolicyEntry] = asyncio.get_running_loop().create_future()
        self._inflight[key_arn] = fut
        try:
            entry = await self._source(key_arn)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._inflight.pop(key_arn, None)
        if generation == self._generation:
            self._entries[key_arn] = entry
            if entry.key_arn != key_arn:
                self._entries[entry.key_arn] = entry
        fut.set_result(entry)
        return entry

    def check(self, caller: Principal, action: KeyAction, key_arn: str, *, default_key: bool) -> None:
        """Raise AccessDeniedException unless ``caller`` may use the key for ``action`` through Secrets
        Manager. The default (AWS-managed) key is exempt; the key's policy must be loaded (:meth:`load`):
        a key not in memory is refused (fail closed)."""
        if default_key:
            return
        entry = self._entries.get(key_arn)
        if entry is None:
            log.warning("kms.key_policy_not_loaded", key_arn=key_arn)
            raise errors.AccessDenied(ACCESS_TO_KMS_DENIED)
        if entry.aws_managed:
            return
        decision = decide_key(
            caller,
            action,
            entry.key_arn,
            entry.policy,
            key_account=entry.account,
            keys={"kms:ViaService": (f"secretsmanager.{_region(entry.key_arn)}.amazonaws.com",)},
        )
        if not decision.allowed:
            log.info(
                "kms.key_use_denied",
                principal=caller.arn,
                action=action,
                key_arn=entry.key_arn,
                reason=decision.reason.value,
                detail=decision.message,
            )
            raise errors.AccessDenied(ACCESS_TO_KMS_DENIED)

    async def check_use(self, caller: Principal | None, action: KeyAction, key_arn: str) -> None:
        """Load (if new) and check. Coffer's own services (no caller, or a service principal) are not
        checked: the store's authorization decided their call."""
        if caller is None or caller.kind is PrincipalKind.SERVICE:
            return
        entry = await self.load(key_arn)
        self.check(caller, action, key_arn, default_key=entry.aws_managed)

    def allows_account(self, key_arn: str, account: str) -> bool:
        """Does the key's policy let principals of ``account`` decrypt with it (cross-account secret reads)?
        False for AWS-managed keys (they cannot be shared) and for keys not loaded yet."""
        entry = self._entries.get(key_arn)
        if entry is None or entry.aws_managed:
            return False
        return allows_account(entry.policy, entry.key_arn, entry.account, account, "kms:Decrypt")


def _region(arn: str) -> str:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 else ""


class KmsKeyPolicyCheck:
    """The store authorization's ``KeyPolicyCheck`` (``coffer.store.authz``) over the kms's key policies: a
    cross-account request may use the secret's key only when it is customer managed and its key policy lets
    the caller's account decrypt with it. The policy is fetched once per key and then kept in memory,
    evicted by the kms's key-change stream."""

    def __init__(self, policies: KeyPolicies) -> None:
        self._policies = policies

    async def __call__(self, secret: SecretFacts, caller_account: str) -> KeyAccess:
        key_arn = secret.kms_key_arn
        if secret.kms_key_id is None or key_arn is None:
            return KeyAccess(customer_managed=False, key_policy_allows_account=False, key_arn=key_arn)
        await self._policies.load(key_arn)
        return KeyAccess(
            customer_managed=True,
            key_policy_allows_account=self._policies.allows_account(key_arn, caller_account),
            key_arn=key_arn,
        )

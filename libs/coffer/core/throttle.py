"""Request rates (AWS Secrets Manager's quotas), pure: token buckets with an injected clock.

Every throttled action belongs to a *group* sharing one rate (AWS counts GetSecretValue and DescribeSecret
together, PutSecretValue with UpdateSecret and the replication writes, ...). A call of principal ``p`` of
account ``a`` takes one token from two buckets of its group: the account's (``rate`` per second) and the
principal's (``rate * principal_share`` per second), so one noisy principal cannot use more than its share
of its account's rate and starve the others. Each bucket holds at most ``rate * burst_seconds`` tokens (a
burst of one second's worth by default) and refills continuously.

Memory stays bounded: a bucket that has refilled to full is the same as no bucket, so idle buckets are
dropped (losslessly) by a sweep that runs at most every ``sweep_seconds``; what is kept is the buckets used
within the last ``burst_seconds / principal_share`` seconds.

Actions not in the table (IAM, STS, KMS, CloudTrail, ...) are not throttled unless a rate is configured for
them. The hot path is one dict lookup for the group, two for the buckets, and arithmetic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from coffer.core import errors

SM = "secretsmanager:"


@dataclass(frozen=True, slots=True)
class RateGroup:
    """Actions (``service:Operation``) sharing one per-account rate (requests per second)."""

    rate: float
    actions: tuple[str, ...]


def _sm(*operations: str) -> tuple[str, ...]:
    return tuple(SM + op for op in operations)


#: AWS Secrets Manager's quotas per account and region (/work/shared/docs/aws-secrets-manager.md §12).
DEFAULT_GROUPS: tuple[RateGroup, ...] = (
    RateGroup(10_000, _sm("GetSecretValue", "DescribeSecret")),
    RateGroup(100, _sm("BatchGetSecretValue")),
    RateGroup(100, _sm("ListSecrets")),
    RateGroup(50, _sm("ListSecretVersionIds")),
    RateGroup(
        50,
        _sm(
            "PutSecretValue",
            "UpdateSecret",
            "UpdateSecretVersionStage",
            "ReplicateSecretToRegions",
            "RemoveRegionsFromReplication",
            "StopReplicationToReplica",
        ),
    ),
    RateGroup(50, _sm("CreateSecret")),
    RateGroup(50, _sm("DeleteSecret")),
    RateGroup(50, _sm("RestoreSecret")),
    RateGroup(50, _sm("GetRandomPassword")),
    RateGroup(50, _sm("RotateSecret", "CancelRotateSecret")),
    RateGroup(50, _sm("TagResource", "UntagResource")),
    RateGroup(
        50,
        _sm("GetResourcePolicy", "PutResourcePolicy", "DeleteResourcePolicy", "ValidateResourcePolicy"),
    ),
)

DEFAULT_PRINCIPAL_SHARE = 0.5
DEFAULT_BURST_SECONDS = 1.0


def _action(key: str) -> str:
    return key if ":" in key else SM + key


def rate_groups(
    overrides: Mapping[str, float] | None = None, base: Iterable[RateGroup] = DEFAULT_GROUPS
) -> tuple[RateGroup, ...]:
    """``base`` with ``overrides`` applied: a key names an action (``kms:Encrypt``; a bare operation is a
    Secrets Manager one) and sets the rate of the group holding it, or adds a group of its own."""
    groups = list(base)
    for key, rate in (overrides or {}).items():
        if not isinstance(rate, int | float) or isinstance(rate, bool) or rate <= 0:
            raise ValueError(f"throttle rate of {key!r} must be a positive number, not {rate!r}")
        action = _action(key)
        for i, group in enumerate(groups):
            if action in group.actions:
                groups[i] = RateGroup(float(rate), group.actions)
                break
        else:
            groups.append(RateGroup(float(rate), (action,)))
    return tuple(groups)


def parse_rates(text: str) -> dict[str, float]:
    """``COFFER_THROTTLE_RATES``: a JSON object ``{"GetSecretValue": 5, "kms:Encrypt": 100}``."""
    if not text.strip():
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("COFFER_THROTTLE_RATES must be a JSON object of action → requests per second")
    rates = {str(k): v for k, v in value.items()}
    rate_groups(rates)  # validates
    return rates


class _Bucket:
    __slots__ = ("last", "tokens")

    def __init__(self, tokens: float, last: float) -> None:
        self.tokens = tokens
        self.last = last


class _Limit:
    """One group's parameters (shared by its buckets)."""

    __slots__ = ("account_burst", "account_rate", "full_after", "index", "principal_burst", "principal_rate")

    def __init__(self, index: int, rate: float, share: float, burst_seconds: float) -> None:
        self.index = index
        self.account_rate = rate
        self.account_burst = max(1.0, rate * burst_seconds)
        self.principal_rate = rate * share
        self.principal_burst = max(1.0, rate * share * burst_seconds)
        # a bucket untouched this long is full again (the same as no bucket)
        self.full_after = max(
            self.account_burst / self.account_rate, self.principal_burst / self.principal_rate
        )


class Throttle:
    """Per-account and per-principal token buckets. ``clock``: monotonic seconds (injected in tests)."""

    def __init__(
        self,
        groups: Iterable[RateGroup] = DEFAULT_GROUPS,
        *,
        principal_share: float = DEFAULT_PRINCIPAL_SHARE,
        burst_seconds: float = DEFAULT_BURST_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sweep_seconds: float = 10.0,
    ) -> None:
        if not 0 < principal_share <= 1:
            raise ValueError("the principal share must be in (0, 1]")
        if burst_seconds <= 0:
            raise ValueError("the burst must be positive")
        self._limits: dict[str, _Limit] = {}
        for i, group in enumerate(groups):
            limit = _Limit(i, group.rate, principal_share, burst_seconds)
            for action in group.actions:
                self._limits[action] = limit
        self._clock = clock
        self._buckets: dict[tuple[str, int], _Bucket] = {}
        self._sweep_seconds = sweep_seconds
        self._next_sweep = clock() + sweep_seconds

    def __len__(self) -> int:
        """The buckets held (for tests of eviction)."""
        return len(self._buckets)

    def admit(self, account: str, principal: str, action: str) -> bool:
        """Take a token of ``action``'s group from the account's and the principal's buckets; False (and
        take none) when either is empty."""
        limit = self._limits.get(action)
        if limit is None:
            return True
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        buckets = self._buckets
        index = limit.index
        # an account id has no ":", a principal's ARN has: the two kinds of keys never meet
        acc = buckets.get((account, index))
        if acc is None:
            acc = buckets[(account, index)] = _Bucket(limit.account_burst, now)
        else:
            tokens = acc.tokens + (now - acc.last) * limit.account_rate
            acc.tokens = tokens if tokens < limit.account_burst else limit.account_burst
            acc.last = now
        own = buckets.get((principal, index))
        if own is None:
            own = buckets[(principal, index)] = _Bucket(limit.principal_burst, now)
        else:
            tokens = own.tokens + (now - own.last) * limit.principal_rate
            own.tokens = tokens if tokens < limit.principal_burst else limit.principal_burst
            own.last = now
        if acc.tokens < 1.0 or own.tokens < 1.0:
            return False
        acc.tokens -= 1.0
        own.tokens -= 1.0
        return True

    def check(self, account: str, principal: str, action: str) -> None:
        """:meth:`admit`, raising ``ThrottlingException`` ("Rate exceeded.") when refused."""
        if not self.admit(account, principal, action):
            raise errors.Throttling("Rate exceeded.")

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self._sweep_seconds
        by_index = {limit.index: limit.full_after for limit in self._limits.values()}
        idle = [key for key, b in self._buckets.items() if now - b.last >= by_index[key[1]]]
        for key in idle:
            del self._buckets[key]

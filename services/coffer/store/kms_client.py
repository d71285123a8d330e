"""The store's adapter over the KMS gRPC service, with a short-lived in-memory cache of plaintext data keys.

* ``generate_data_key`` / ``decrypt_data_key`` bind every data key to ``{"SecretARN": arn, "SecretVersionId":
  vid}`` (the encryption context AWS Secrets Manager uses), and turn KMS failures into the Secrets Manager
  errors: ``EncryptionFailure`` on writes, ``DecryptionFailure`` on reads, with AWS's wording
  ``Secrets Manager can't decrypt the secret value: <KMS message> (Service: AWSKMS; Status Code: 400; Error
  Code: <KMS error>; Request ID: <id>; Proxy: null)``.
* Plaintext data keys are cached in memory only, keyed by (sha256 of the wrapped blob, ARN, version id), for
  ``ttl`` seconds. ``coffer.store.key_events`` follows the kms's stream of key-state changes and evicts every
  entry of a changed key at once (and everything when the stream (re)opens: changes may have been missed).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping

import structlog

from coffer import metrics
from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.core import errors
from coffer.rpc.context import current_request_id
from coffer.store.records import DataKey, KeyInfo

log = structlog.get_logger("coffer.store.kms")

DEFAULT_KEY_ALIAS = "alias/aws/secretsmanager"
#: KMS errors that are about the caller's key or ciphertext (wrapped into Encryption/DecryptionFailure).
#: Anything else (KMS unreachable, internal errors) passes through so clients can retry.
_PASS_THROUGH = (errors.Unavailable, errors.Throttling, errors.Internal)


def _context(secret_arn: str, version_id: str) -> dict[str, str]:
    return {"SecretARN": secret_arn, "SecretVersionId": version_id}


def kms_detail(err: errors.CofferError) -> str:
    """``<KMS message> (Service: AWSKMS; Status Code: 400; Error Code: <code>; Request ID: <id>;
    Proxy: null)`` - how AWS Secrets Manager quotes a KMS failure."""
    rid = current_request_id() or "-"
    return (
        f"{err.message} (Service: AWSKMS; Status Code: 400; Error Code: {err.code}; Request ID: {rid}; "
        "Proxy: null)"
    )


def encryption_failure(err: errors.CofferError) -> errors.EncryptionFailure:
    return errors.EncryptionFailure(f"Secrets Manager can't encrypt the secret value: {kms_detail(err)}")


def decryption_failure(err: errors.CofferError) -> errors.DecryptionFailure:
    if not err.message:  # InvalidCiphertextException carries no message
        return errors.DecryptionFailure()
    return errors.DecryptionFailure(f"Secrets Manager can't decrypt the secret value: {kms_detail(err)}")


def key_state_failure(info: KeyInfo) -> errors.EncryptionFailure | None:
    """A key that cannot encrypt right now, phrased like the KMS error GenerateDataKey would give."""
    if info.state == "Enabled":
        return None
    if info.state == "Disabled":
        return encryption_failure(errors.KmsDisabled(f"{info.arn} is disabled."))
    if info.state == "PendingDeletion":
        return encryption_failure(errors.KmsInvalidState(f"{info.arn} is pending deletion."))
    return encryption_failure(errors.KmsInvalidState(f"{info.arn} is {info.state}."))


_CACHE_HIT = metrics.DATA_KEY_CACHE.labels("store", "hit")
_CACHE_MISS = metrics.DATA_KEY_CACHE.labels("store", "miss")

_CacheKey = tuple[bytes, str, str]


class DataKeyCache:
    """Plaintext data keys in memory for a bounded time, evictable per KMS key."""

    def __init__(
        self, *, ttl: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: dict[_CacheKey, tuple[float, DataKey]] = {}
        self._by_key_arn: dict[str, set[_CacheKey]] = {}

    @staticmethod
    def key_of(wrapped: bytes, secret_arn: str, version_id: str) -> _CacheKey:
        return hashlib.sha256(wrapped).digest(), secret_arn, version_id

    def __len__(self) -> int:
        return len(self._entries)

    def holds(self, key_arn: str) -> bool:
        """Whether any data key wrapped under ``key_arn`` is cached."""
        return bool(self._by_key_arn.get(key_arn))

    def get(self, wrapped: bytes, secret_arn: str, version_id: str) -> DataKey | None:
        key = self.key_of(wrapped, secret_arn, version_id)
        hit = self._entries.get(key)
        if hit is None:
            return None
        expires, data_key = hit
        if self._clock() >= expires:
            self._drop(key)
            return None
        return data_key

    def put(self, secret_arn: str, version_id: str, data_key: DataKey) -> None:
        if self._ttl <= 0:
            return
        key = self.key_of(data_key.wrapped, secret_arn, version_id)
        if key not in self._entries and len(self._entries) >= self._max:
            self._drop(next(iter(self._entries)))
        self._entries[key] = (self._clock() + self._ttl, data_key)
        self._by_key_arn.setdefault(data_key.key_arn, set()).add(key)

    def _drop(self, key: _CacheKey) -> None:
        hit = self._entries.pop(key, None)
        if hit is not None:
            keys = self._by_key_arn.get(hit[1].key_arn)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_key_arn[hit[1].key_arn]

    def evict_key(self, key_arn: str) -> int:
        """Forget every data key wrapped under ``key_arn``; returns how many were dropped."""
        keys = self._by_key_arn.pop(key_arn, set())
        for key in keys:
            self._entries.pop(key, None)
        return len(keys)

    def clear(self) -> None:
        self._entries.clear()
        self._by_key_arn.clear()


class KmsClient:
    """What the store needs from KMS, over the gRPC stub (the channel raises CofferErrors)."""

    def __init__(
        self, stub: kms_pb2_grpc.KeyManagementServiceStub, *, cache: DataKeyCache, timeout: float = 10.0
    ):
        self._stub = stub
        self.cache = cache
        self._timeout = timeout

    async def describe_key(self, key_id: str) -> KeyInfo:
        """Resolve a KmsKeyId (id, key ARN, alias name or alias ARN). Unknown or unusable keys are
        EncryptionFailure (the secret could not be encrypted under it)."""
        try:
            resp = await self._stub.DescribeKey(
                kms_pb2.DescribeKeyRequest(key_id=key_id), timeout=self._timeout
            )
        except _PASS_THROUGH:
            raise
        except errors.CofferError as exc:
            raise encryption_failure(exc) from None
        md = resp.key_metadata
        return KeyInfo(arn=md.arn, state=md.key_state, aws_managed=md.key_manager == "AWS")

    async def generate_data_key(self, *, key_id: str, secret_arn: str, version_id: str) -> DataKey:
        try:
            resp = await self._stub.GenerateDataKey(
                kms_pb2.GenerateDataKeyRequest(
                    key_id=key_id, key_spec="AES_256", encryption_context=_context(secret_arn, version_id)
                ),
                timeout=self._timeout,
            )
        except _PASS_THROUGH:
            raise
        except errors.CofferError as exc:
            raise encryption_failure(exc) from None
        data_key = DataKey(plaintext=resp.plaintext, wrapped=resp.ciphertext_blob, key_arn=resp.key_id)
        self.cache.put(secret_arn, version_id, data_key)
        return data_key

    async def decrypt_data_key(self, *, wrapped: bytes, secret_arn: str, version_id: str) -> DataKey:
        cached = self.cache.get(wrapped, secret_arn, version_id)
        if cached is not None:
            _CACHE_HIT.inc()
            return cached
        _CACHE_MISS.inc()
        try:
            resp = await self._stub.Decrypt(
                kms_pb2.DecryptRequest(
                    ciphertext_blob=wrapped, encryption_context=_context(secret_arn, version_id)
                ),
                timeout=self._timeout,
            )
        except _PASS_THROUGH:
            raise
        except errors.CofferError as exc:
            raise decryption_failure(exc) from None
        data_key = DataKey(plaintext=resp.plaintext, wrapped=wrapped, key_arn=resp.key_id)
        self.cache.put(secret_arn, version_id, data_key)
        return data_key

    # -- data keys under another encryption context (the sealed secret access keys) -----------------------

    @staticmethod
    def _cache_parts(context: Mapping[str, str]) -> tuple[str, str]:
        """The cache's (arn, version) pair for a non-secret context: no secret ARN starts with ``{``."""
        return json.dumps(dict(context), sort_keys=True, separators=(",", ":")), ""

    async def generate_data_key_in(self, *, key_id: str, context: Mapping[str, str]) -> DataKey:
        """A fresh AES-256 data key of ``key_id`` bound to ``context``. KMS failures pass through as the
        KMS raised them (the caller phrases them for its own API)."""
        resp = await self._stub.GenerateDataKey(
            kms_pb2.GenerateDataKeyRequest(
                key_id=key_id, key_spec="AES_256", encryption_context=dict(context)
            ),
            timeout=self._timeout,
        )
        data_key = DataKey(plaintext=resp.plaintext, wrapped=resp.ciphertext_blob, key_arn=resp.key_id)
        self.cache.put(*self._cache_parts(context), data_key)
        return data_key

    async def decrypt_data_key_in(self, *, wrapped: bytes, context: Mapping[str, str]) -> DataKey:
        """Unwrap a data key sealed with ``context`` (cached like the secrets' data keys); a wrong context is
        the KMS's InvalidCiphertextException."""
        parts = self._cache_parts(context)
        cached = self.cache.get(wrapped, *parts)
        if cached is not None:
            _CACHE_HIT.inc()
            return cached
        _CACHE_MISS.inc()
        resp = await self._stub.Decrypt(
            kms_pb2.DecryptRequest(ciphertext_blob=wrapped, encryption_context=dict(context)),
            timeout=self._timeout,
        )
        data_key = DataKey(plaintext=resp.plaintext, wrapped=wrapped, key_arn=resp.key_id)
        self.cache.put(*parts, data_key)
        return data_key

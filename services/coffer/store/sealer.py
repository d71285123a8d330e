"""Envelope encryption of secret values: the one component that seals a value under a fresh KMS data key and
opens a stored version again. The secret use cases, rotation and replication all go through it."""

from __future__ import annotations

import secrets as random_source
from collections.abc import Callable
from typing import Protocol

from coffer.core.model import SecretValue
from coffer.crypto import envelope
from coffer.rpc.context import current_caller
from coffer.store.key_policies import KeyPolicies
from coffer.store.kms_client import DEFAULT_KEY_ALIAS
from coffer.store.records import DataKey, SealedValue, StoredValue


class DataKeys(Protocol):
    async def generate_data_key(self, *, key_id: str, secret_arn: str, version_id: str) -> DataKey: ...

    async def decrypt_data_key(self, *, wrapped: bytes, secret_arn: str, version_id: str) -> DataKey: ...


class ValueSealer:
    """Seals values for one region's KMS. The ciphertext is bound to the secret ARN, the version id and the
    value kind, so a stored value cannot be moved to another secret or version."""

    def __init__(
        self,
        kms: DataKeys,
        *,
        token_bytes: Callable[[int], bytes] = random_source.token_bytes,
        key_policies: KeyPolicies | None = None,
    ) -> None:
        self._kms = kms
        self._token_bytes = token_bytes
        self.key_policies = key_policies

    async def seal(self, *, arn: str, version_id: str, key_id: str | None, value: SecretValue) -> SealedValue:
        """Encrypt ``value`` under a fresh data key of ``key_id`` (None: the default key)."""
        data_key = await self._kms.generate_data_key(
            key_id=key_id or DEFAULT_KEY_ALIAS, secret_arn=arn, version_id=version_id
        )
        if self.key_policies is not None and key_id is not None:
            # the caller must be allowed to use the secret's customer-managed key (its key policy decides)
            await self.key_policies.check_use(current_caller(), "kms:GenerateDataKey", data_key.key_arn)
        ciphertext = envelope.seal(
            data_key.plaintext,
            value.data,
            secret_arn=arn,
            version_id=version_id,
            kind=value.kind,
            nonce=self._token_bytes(envelope.NONCE_SIZE),
        )
        return SealedValue(
            kind=value.kind,
            ciphertext=ciphertext,
            wrapped_key=data_key.wrapped,
            kms_key_arn=data_key.key_arn,
            default_key=key_id is None,
        )

    async def open(self, *, arn: str, stored: StoredValue) -> SecretValue:
        """Decrypt a stored version of the secret ``arn``."""
        data_key = await self._kms.decrypt_data_key(
            wrapped=stored.wrapped_key, secret_arn=arn, version_id=stored.version_id
        )
        if self.key_policies is not None:
            await self.key_policies.check_use(current_caller(), "kms:Decrypt", data_key.key_arn)
        data = envelope.open_sealed(
            data_key.plaintext,
            stored.ciphertext,
            secret_arn=arn,
            version_id=stored.version_id,
            kind=stored.kind,
        )
        return SecretValue(stored.kind, data)

    async def reseal(self, *, arn: str, stored: StoredValue, key_id: str | None) -> SealedValue:
        """Open a stored version and seal it again under ``key_id`` (a key change re-encrypts this way)."""
        value = await self.open(arn=arn, stored=stored)
        return await self.seal(arn=arn, version_id=stored.version_id, key_id=key_id, value=value)

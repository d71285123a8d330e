"""Secret access keys sealed at rest (issue 10): AWS SigV4 derives its signing key from the secret itself, so
the gateway's AWS endpoint needs the secret back; the store keeps it envelope-encrypted and opens it only to
answer the gateway's ``ResolveAccessKey``.

* **Which KMS key.** The deployment account's AWS-managed ``alias/aws/secretsmanager``, used by the store
  *as itself* (no end caller is forwarded on these KMS calls): an access key belongs to IAM, not to the
  caller's secrets, so neither the caller's KMS permissions nor any customer-managed key policy may stand
  between IAM and its keys (a user who denied themselves ``kms:*`` can still create an access key), and no
  customer can disable or schedule for deletion the key every credential depends on. A dedicated internal
  key would need a new kind of predefined key in the kms for the same guarantees.
* **Binding.** The data key is generated and unwrapped with the KMS encryption context
  ``{"coffer:AccessKeyId": <id>}``, and the AES-256-GCM ciphertext (``coffer.crypto.envelope``'s format) has
  the access key id in its associated data: a blob copied onto another key's row does not open.
* **Caching.** Unwrapped data keys live in the store's :class:`~coffer.store.kms_client.DataKeyCache` (memory
  only, evicted with the key's state changes), as the secrets' data keys do. Plaintext secrets are never
  cached or logged here.
"""

from __future__ import annotations

import contextlib
import secrets as random_source
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from coffer import logs
from coffer.core import errors
from coffer.crypto import envelope
from coffer.rpc import context as ctx
from coffer.store.kms_client import DEFAULT_KEY_ALIAS
from coffer.store.records import DataKey

log = logs.get_logger("coffer.store.access_key_secrets")

#: The KMS encryption context key that binds a data key to one access key id.
CONTEXT_KEY = "coffer:AccessKeyId"
#: What stands for the "secret ARN" in the AES-GCM associated data: no secret ARN starts with it.
_AAD_PREFIX = "coffer:iam:access-key/"


class ContextDataKeys(Protocol):
    async def generate_data_key_in(self, *, key_id: str, context: Mapping[str, str]) -> DataKey: ...

    async def decrypt_data_key_in(self, *, wrapped: bytes, context: Mapping[str, str]) -> DataKey: ...


@dataclass(frozen=True, slots=True)
class SealedSecret:
    """What ``store.iam_access_keys`` keeps of a secret access key (``secret_ciphertext``,
    ``secret_wrapped_key``)."""

    ciphertext: bytes
    wrapped_key: bytes


@contextlib.contextmanager
def _as_store() -> Iterator[None]:
    """Make the KMS calls inside as the store itself: the channel forwards no end caller's assertion."""
    principal = ctx.principal_var.set(None)
    caller = ctx.caller_var.set(None)
    try:
        yield
    finally:
        ctx.caller_var.reset(caller)
        ctx.principal_var.reset(principal)


def _context(access_key_id: str) -> dict[str, str]:
    return {CONTEXT_KEY: access_key_id}


class AccessKeySecrets:
    """Seal and open secret access keys under the KMS."""

    def __init__(
        self,
        kms: ContextDataKeys,
        *,
        key_id: str = DEFAULT_KEY_ALIAS,
        token_bytes: Callable[[int], bytes] = random_source.token_bytes,
    ) -> None:
        self._kms = kms
        self._key_id = key_id
        self._token_bytes = token_bytes

    async def seal(self, access_key_id: str, secret_access_key: str) -> SealedSecret:
        """Encrypt under a fresh data key bound to ``access_key_id``. A KMS that refuses or cannot be reached
        raises :class:`~coffer.core.errors.Unavailable` (the key must not be created without its secret)."""
        sealed = await self._seal(access_key_id, secret_access_key, tolerate_sealed_kms=False)
        assert sealed is not None
        return sealed

    async def seal_unless_kms_sealed(self, access_key_id: str, secret_access_key: str) -> SealedSecret | None:
        """:meth:`seal`, except that a KMS that is sealed (or whose HSM is away) gives None: the key is then
        created without its stored secret, usable with Coffer's own signing but not over the AWS protocol.
        Operators need access keys to unseal the KMS, so a sealed KMS must not stop their creation; any other
        failure still refuses the key."""
        return await self._seal(access_key_id, secret_access_key, tolerate_sealed_kms=True)

    async def _seal(
        self, access_key_id: str, secret_access_key: str, *, tolerate_sealed_kms: bool
    ) -> SealedSecret | None:
        try:
            with _as_store():
                data_key = await self._kms.generate_data_key_in(
                    key_id=self._key_id, context=_context(access_key_id)
                )
        except (errors.KmsSealed, errors.KmsHsmUnavailable) as exc:
            if not tolerate_sealed_kms:
                raise errors.Unavailable(
                    f"The access key's secret could not be encrypted: the KMS answered {exc.code}. Try again."
                ) from None
            log.warning(
                "iam.access_key_created_without_stored_secret", access_key_id=access_key_id, error=exc.code
            )
            return None
        except errors.CofferError as exc:
            log.warning("iam.access_key_seal_failed", access_key_id=access_key_id, error=exc.code)
            raise errors.Unavailable(
                f"The access key's secret could not be encrypted: the KMS answered {exc.code}. Try again."
            ) from None
        ciphertext = envelope.seal(
            data_key.plaintext,
            secret_access_key.encode("utf-8"),
            secret_arn=_AAD_PREFIX + access_key_id,
            version_id="",
            kind="string",
            nonce=self._token_bytes(envelope.NONCE_SIZE),
        )
        return SealedSecret(ciphertext=ciphertext, wrapped_key=data_key.wrapped)

    async def open(self, access_key_id: str, sealed: SealedSecret) -> str:
        """Decrypt the secret of ``access_key_id``. A blob that is not this key's (moved, altered) raises
        :class:`~coffer.core.errors.DecryptionFailure`; KMS unavailability passes through."""
        try:
            with _as_store():
                data_key = await self._kms.decrypt_data_key_in(
                    wrapped=sealed.wrapped_key, context=_context(access_key_id)
                )
        except (errors.Unavailable, errors.Throttling, errors.Internal):
            raise
        except errors.CofferError as exc:
            raise errors.DecryptionFailure(
                f"The secret stored with access key {access_key_id} does not open: "
                f"the KMS answered {exc.code}."
            ) from None
        plaintext = envelope.open_sealed(
            data_key.plaintext,
            sealed.ciphertext,
            secret_arn=_AAD_PREFIX + access_key_id,
            version_id="",
            kind="string",
        )
        return plaintext.decode("utf-8")

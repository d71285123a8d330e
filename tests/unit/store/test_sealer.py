"""store/sealer.py: the one component that seals and opens secret values (fake KMS, no I/O)."""

from __future__ import annotations

import pytest

from coffer.core.errors import DecryptionFailure
from coffer.core.model import SecretValue
from coffer.store.kms_client import DEFAULT_KEY_ALIAS
from coffer.store.records import DataKey, SealedValue, StoredValue
from coffer.store.sealer import ValueSealer

ARN = "arn:aws:secretsmanager:local-1:000000000000:secret:db/prod-a1B2c3"


class FakeKms:
    """Wraps a data key by prefixing the key id (enough to check which key sealed what)."""

    def __init__(self) -> None:
        self.generated: list[tuple[str, str, str]] = []

    async def generate_data_key(self, *, key_id: str, secret_arn: str, version_id: str) -> DataKey:
        self.generated.append((key_id, secret_arn, version_id))
        plaintext = (key_id.encode() * 32)[:32]
        return DataKey(plaintext=plaintext, wrapped=key_id.encode(), key_arn=f"arn:key/{key_id}")

    async def decrypt_data_key(self, *, wrapped: bytes, secret_arn: str, version_id: str) -> DataKey:
        key_id = wrapped.decode()
        return DataKey(plaintext=(wrapped * 32)[:32], wrapped=wrapped, key_arn=f"arn:key/{key_id}")


def _stored(version_id: str, sealed: SealedValue) -> StoredValue:
    return StoredValue(
        version_id=version_id, kind=sealed.kind, ciphertext=sealed.ciphertext, wrapped_key=sealed.wrapped_key
    )


async def test_seal_then_open_round_trips_under_the_default_key() -> None:
    kms = FakeKms()
    sealer = ValueSealer(kms, token_bytes=lambda n: bytes(n))
    sealed = await sealer.seal(arn=ARN, version_id="v1", key_id=None, value=SecretValue.of_string("hunter2"))
    assert kms.generated == [(DEFAULT_KEY_ALIAS, ARN, "v1")]
    assert sealed.default_key and sealed.kind == "string" and b"hunter2" not in sealed.ciphertext
    opened = await sealer.open(arn=ARN, stored=_stored("v1", sealed))
    assert opened == SecretValue.of_string("hunter2")


async def test_a_value_is_bound_to_its_secret_and_version() -> None:
    sealer = ValueSealer(FakeKms())
    sealed = await sealer.seal(
        arn=ARN, version_id="v1", key_id="k1", value=SecretValue.of_binary(b"\x00\x01")
    )
    assert not sealed.default_key and sealed.kms_key_arn == "arn:key/k1"
    with pytest.raises(DecryptionFailure):
        await sealer.open(arn=ARN, stored=_stored("v2", sealed))
    with pytest.raises(DecryptionFailure):
        await sealer.open(arn=ARN + "x", stored=_stored("v1", sealed))


async def test_reseal_moves_a_value_to_another_key() -> None:
    sealer = ValueSealer(FakeKms())
    sealed = await sealer.seal(arn=ARN, version_id="v1", key_id="k1", value=SecretValue.of_string("s"))
    moved = await sealer.reseal(arn=ARN, stored=_stored("v1", sealed), key_id="k2")
    assert moved.kms_key_arn == "arn:key/k2" and moved.wrapped_key == b"k2"
    assert await sealer.open(arn=ARN, stored=_stored("v1", moved)) == SecretValue.of_string("s")

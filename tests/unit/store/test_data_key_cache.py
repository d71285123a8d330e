"""The store's in-memory data-key cache: keyed by (sha256 of wrapped blob, ARN, version id), bounded in time
and size, evictable per KMS key; and how KMS failures are worded for Secrets Manager callers."""

from __future__ import annotations

from coffer.core import errors
from coffer.rpc import context
from coffer.store.kms_client import DataKeyCache, decryption_failure, encryption_failure, key_state_failure
from coffer.store.records import DataKey, KeyInfo

KEY_A = "arn:aws:kms:local-1:000000000000:key/aaaa"
KEY_B = "arn:aws:kms:local-1:000000000000:key/bbbb"


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def dk(wrapped: bytes, key_arn: str = KEY_A) -> DataKey:
    return DataKey(plaintext=b"p" * 32, wrapped=wrapped, key_arn=key_arn)


def test_hit_needs_same_blob_arn_and_version() -> None:
    cache = DataKeyCache(ttl=30)
    cache.put("arn1", "v1", dk(b"blob"))
    assert cache.get(b"blob", "arn1", "v1") is not None
    assert cache.get(b"blob", "arn1", "v2") is None
    assert cache.get(b"blob", "arn2", "v1") is None
    assert cache.get(b"blob2", "arn1", "v1") is None


def test_entries_expire() -> None:
    clock = FakeTime()
    cache = DataKeyCache(ttl=30, clock=clock)
    cache.put("arn1", "v1", dk(b"blob"))
    clock.now += 29.9
    assert cache.get(b"blob", "arn1", "v1") is not None
    clock.now += 0.2
    assert cache.get(b"blob", "arn1", "v1") is None
    assert len(cache) == 0


def test_zero_ttl_disables_the_cache() -> None:
    cache = DataKeyCache(ttl=0)
    cache.put("arn1", "v1", dk(b"blob"))
    assert cache.get(b"blob", "arn1", "v1") is None


def test_evict_by_kms_key_drops_only_that_keys_entries() -> None:
    cache = DataKeyCache(ttl=30)
    cache.put("arn1", "v1", dk(b"1", KEY_A))
    cache.put("arn2", "v1", dk(b"2", KEY_A))
    cache.put("arn3", "v1", dk(b"3", KEY_B))
    assert cache.evict_key(KEY_A) == 2
    assert cache.get(b"1", "arn1", "v1") is None
    assert cache.get(b"2", "arn2", "v1") is None
    assert cache.get(b"3", "arn3", "v1") is not None
    assert cache.evict_key(KEY_A) == 0


def test_size_is_bounded() -> None:
    cache = DataKeyCache(ttl=30, max_entries=3)
    for i in range(5):
        cache.put("arn", f"v{i}", dk(bytes([i])))
    assert len(cache) == 3
    assert cache.get(bytes([0]), "arn", "v0") is None
    assert cache.get(bytes([4]), "arn", "v4") is not None


def test_data_keys_never_show_in_repr() -> None:
    key = DataKey(plaintext=b"SECRETKEYMATERIAL" * 2, wrapped=b"WRAPPED", key_arn=KEY_A)
    assert "SECRETKEYMATERIAL" not in repr(key) and "WRAPPED" not in repr(key)


def test_kms_failures_in_secrets_manager_words() -> None:
    token = context.request_id_var.set("req-123")
    try:
        disabled = decryption_failure(errors.KmsDisabled(f"{KEY_A} is disabled."))
        assert disabled.code == "DecryptionFailure"
        assert disabled.message == (
            f"Secrets Manager can't decrypt the secret value: {KEY_A} is disabled. (Service: AWSKMS; "
            "Status Code: 400; Error Code: DisabledException; Request ID: req-123; Proxy: null)"
        )
        pending = decryption_failure(errors.KmsInvalidState(f"{KEY_A} is pending deletion."))
        assert (
            "is pending deletion. (Service: AWSKMS; Status Code: 400; Error Code: KMSInvalidStateException"
            in (pending.message)
        )
        opaque = decryption_failure(errors.InvalidCiphertext())
        assert (
            opaque.message
            == "Secrets Manager can't decrypt the protected secret text using the provided KMS key."
        )
        enc = encryption_failure(errors.KmsNotFound(f"Key '{KEY_A}' does not exist"))
        assert enc.code == "EncryptionFailure"
        assert enc.message.startswith(
            f"Secrets Manager can't encrypt the secret value: Key '{KEY_A}' does not exist ("
        )
    finally:
        context.request_id_var.reset(token)


def test_key_states_that_cannot_encrypt() -> None:
    assert key_state_failure(KeyInfo(arn=KEY_A, state="Enabled", aws_managed=False)) is None
    disabled = key_state_failure(KeyInfo(arn=KEY_A, state="Disabled", aws_managed=False))
    assert disabled is not None and "Error Code: DisabledException" in disabled.message
    pending = key_state_failure(KeyInfo(arn=KEY_A, state="PendingDeletion", aws_managed=False))
    assert pending is not None and "Error Code: KMSInvalidStateException" in pending.message

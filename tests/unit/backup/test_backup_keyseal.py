"""The root key under a passphrase: it round-trips; a wrong passphrase, another backup's data digest,
another file name or a changed blob do not open it; the blob never holds the key; short passphrases are
refused when a backup is written."""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from coffer.backup import BackupError, keyseal

FAST = {"n": 2**14}  # the real cost (2^17) takes about a second; the format is the same
PASSPHRASE = "a passphrase long enough"
DIGEST = "ab" * 32


def test_the_root_key_round_trips() -> None:
    secret = secrets.token_bytes(32)
    blob = keyseal.seal(secret, PASSPHRASE, name="root.key", data_digest=DIGEST, **FAST)
    assert keyseal.open_sealed(blob, PASSPHRASE, name="root.key", data_digest=DIGEST) == secret
    assert blob["kdf"]["name"] == "scrypt" and blob["cipher"] == "AES-256-GCM"
    # the JSON written to the backup: no key, in any spelling, and not the passphrase
    text = json.dumps(blob)
    for spelled in (secret.hex(), base64.b64encode(secret).decode(), PASSPHRASE):
        assert spelled not in text


def test_the_default_cost_is_scrypt_2_17() -> None:
    blob = keyseal.seal(b"k" * 32, PASSPHRASE, name="root.key", data_digest=DIGEST)
    assert (blob["kdf"]["n"], blob["kdf"]["r"], blob["kdf"]["p"]) == (2**17, 8, 1)


def test_two_seals_of_one_key_differ() -> None:
    one = keyseal.seal(b"k" * 32, PASSPHRASE, name="root.key", data_digest=DIGEST, **FAST)
    two = keyseal.seal(b"k" * 32, PASSPHRASE, name="root.key", data_digest=DIGEST, **FAST)
    assert one["kdf"]["salt"] != two["kdf"]["salt"] and one["ciphertext"] != two["ciphertext"]


@pytest.mark.parametrize(
    ("passphrase", "name", "digest"),
    [
        ("a passphrase long enougH", "root.key", DIGEST),
        (PASSPHRASE, "root.key.next", DIGEST),
        (PASSPHRASE, "root.key", "cd" * 32),
    ],
    ids=["wrong passphrase", "other file", "other backup or changed manifest"],
)
def test_it_does_not_open_otherwise(passphrase: str, name: str, digest: str) -> None:
    blob = keyseal.seal(b"k" * 32, PASSPHRASE, name="root.key", data_digest=DIGEST, **FAST)
    with pytest.raises(BackupError, match="passphrase is wrong, or the backup was changed"):
        keyseal.open_sealed(blob, passphrase, name=name, data_digest=digest)


def test_a_changed_ciphertext_does_not_open() -> None:
    blob = keyseal.seal(b"k" * 32, PASSPHRASE, name="root.key", data_digest=DIGEST, **FAST)
    raw = bytearray(base64.b64decode(blob["ciphertext"]))
    raw[0] ^= 1
    blob["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(BackupError, match="does not decrypt"):
        keyseal.open_sealed(blob, PASSPHRASE, name="root.key", data_digest=DIGEST)


def test_the_passphrase_is_compared_in_unicode_normal_form() -> None:
    composed, decomposed = "pässphrase long enough", "pa\u0308ssphrase long enough"
    blob = keyseal.seal(b"k" * 32, composed, name="root.key", data_digest=DIGEST, **FAST)
    assert keyseal.open_sealed(blob, decomposed, name="root.key", data_digest=DIGEST) == b"k" * 32


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other"}, "unknown format"),
        ({"kdf": {"name": "pbkdf2"}}, "unknown key derivation"),
        ({"nonce": "***"}, "malformed"),
        ({"ciphertext": None}, "malformed"),
        ({"kdf": {"name": "scrypt", "salt": "AAAA", "n": 2**30, "r": 8, "p": 1}}, "out of range"),
        ({"kdf": {"name": "scrypt", "salt": "AAAA", "n": 3 * 2**14, "r": 8, "p": 1}}, "out of range"),
    ],
)
def test_a_malformed_blob_is_refused_clearly(change: dict[str, object], message: str) -> None:
    blob = keyseal.seal(b"k" * 32, PASSPHRASE, name="root.key", data_digest=DIGEST, **FAST)
    blob.update(change)
    with pytest.raises(BackupError, match=message):
        keyseal.open_sealed(blob, PASSPHRASE, name="root.key", data_digest=DIGEST)


@pytest.mark.parametrize("passphrase", ["", "short", "           x", "eleven char"])
def test_short_passphrases_are_refused(passphrase: str) -> None:
    with pytest.raises(BackupError, match="at least 12 characters"):
        keyseal.check_passphrase(passphrase)


def test_a_long_enough_passphrase_is_accepted() -> None:
    keyseal.check_passphrase("twelve chars")

"""The KMS root key: wraps bound to (account, region, key id, material id); the on-disk key file."""

from __future__ import annotations

import dataclasses
import os
import secrets
import stat
from pathlib import Path

import pytest

from coffer.crypto.rootkey import MaterialBinding, RootKey, UnwrapError
from coffer.rootkey_file import RootKeyFileError, ensure_root_key, load_root_key

BINDING = MaterialBinding(
    account_id="000000000000",
    region="local-1",
    key_id="1234abcd-12ab-34cd-56ef-1234567890ab",
    material_id="ab" * 32,
)


def test_wrap_round_trip_hides_material() -> None:
    root = RootKey.generate()
    material = secrets.token_bytes(32)
    wrapped = root.wrap(material, BINDING)
    assert material not in wrapped
    assert root.wrap(material, BINDING) != wrapped  # random IV
    assert root.unwrap(wrapped, BINDING) == material


@pytest.mark.parametrize("field", ["account_id", "region", "key_id", "material_id"])
def test_wrap_is_bound_to_every_binding_field(field: str) -> None:
    root = RootKey.generate()
    wrapped = root.wrap(secrets.token_bytes(32), BINDING)
    moved = dataclasses.replace(BINDING, **{field: getattr(BINDING, field) + "x"})
    with pytest.raises(UnwrapError):
        root.unwrap(wrapped, moved)


def test_another_root_key_cannot_unwrap_and_tampering_fails() -> None:
    root = RootKey.generate()
    wrapped = root.wrap(secrets.token_bytes(32), BINDING)
    with pytest.raises(UnwrapError):
        RootKey.generate().unwrap(wrapped, BINDING)
    for i in range(len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[i] ^= 0x01
        with pytest.raises(UnwrapError):
            root.unwrap(bytes(tampered), BINDING)
    with pytest.raises(UnwrapError):
        root.unwrap(b"", BINDING)


def test_root_key_id_is_stable_public_and_distinct() -> None:
    secret = secrets.token_bytes(32)
    assert RootKey(secret).key_id == RootKey(secret).key_id
    assert RootKey(secret).key_id != RootKey.generate().key_id
    assert secret.hex()[:8] not in RootKey(secret).key_id
    assert secret.hex() not in repr(RootKey(secret))
    with pytest.raises(ValueError):
        RootKey(b"short")


def test_ensure_root_key_creates_private_file_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "root.key"
    created = ensure_root_key(path)
    assert path.read_bytes() and len(path.read_bytes()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = ensure_root_key(path)
    assert again.key_id == created.key_id == load_root_key(path).key_id
    assert [p.name for p in path.parent.iterdir()] == ["root.key"]  # no temp files left behind


def test_load_root_key_fails_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "root.key"
    with pytest.raises(RootKeyFileError, match="does not exist"):
        load_root_key(missing)
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"too short")
    with pytest.raises(RootKeyFileError, match="exactly 32 bytes"):
        load_root_key(bad)
    hexed = tmp_path / "hex.key"
    secret = secrets.token_bytes(32)
    hexed.write_text(secret.hex() + "\n")
    os.chmod(hexed, 0o600)
    assert load_root_key(hexed).key_id == RootKey(secret).key_id

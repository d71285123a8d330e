"""The credentials file and bearer verification: token shape, hashing, wrong/tampered credentials, the
constant-time comparison, reload on change, and the Authorization header parsing."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

import pytest

from coffer import credentials as creds
from coffer.core import errors
from coffer.gateway.auth import MISSING_CODE, CredentialStore, bearer_token


def test_token_shape_and_file_holds_only_a_hash(tmp_path: Path) -> None:
    path = tmp_path / "home" / "credentials.json"
    token = creds.create_credential(path, principal="user/admin")
    parsed = creds.parse_token(token)
    assert parsed is not None
    cred_id, secret = parsed
    assert token == f"cfr_{cred_id}_{secret}"
    assert len(cred_id) == 16 and len(secret) == 43  # 32 bytes, URL-safe base64 without padding
    raw = path.read_text()
    assert secret not in raw and token not in raw
    doc = json.loads(raw)
    entry = doc["credentials"][cred_id]
    assert entry["principal"] == "user/admin"
    assert entry["sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_verify_right_wrong_unknown_and_malformed(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    admin = creds.create_credential(path, principal="user/admin")
    alice = creds.create_credential(path, principal="user/alice")
    table = creds.read_credentials(path)
    assert creds.verify_token(table, admin) == "user/admin"
    assert creds.verify_token(table, alice) == "user/alice"
    cred_id, secret = creds.parse_token(admin) or ("", "")
    wrong_secret = f"cfr_{cred_id}_{'A' * 43}"
    unknown_id = f"cfr_{'0' * 16}_{secret}"
    for bad in (wrong_secret, unknown_id, admin + "x", admin[:-1], "cfr_abc", "", "Bearer " + admin):
        with pytest.raises(errors.Unauthenticated) as info:
            creds.verify_token(table, bad)
        assert info.value.code == "UnrecognizedClientException"
        assert info.value.message == "The security token included in the request is invalid."


def test_tampered_hash_in_file_rejects_the_token(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    token = creds.create_credential(path, principal="user/admin")
    doc = json.loads(path.read_text())
    (entry,) = doc["credentials"].values()
    entry["sha256"] = ("0" if entry["sha256"][0] != "0" else "1") + entry["sha256"][1:]
    path.write_text(json.dumps(doc))
    with pytest.raises(errors.Unauthenticated):
        creds.verify_token(creds.read_credentials(path), token)


def test_comparison_is_constant_time_for_hits_and_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.json"
    token = creds.create_credential(path, principal="user/admin")
    table = creds.read_credentials(path)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    creds.verify_token(table, token)
    with pytest.raises(errors.Unauthenticated):
        creds.verify_token(table, f"cfr_{'f' * 16}_{'B' * 43}")  # unknown id: still one comparison
    with pytest.raises(errors.Unauthenticated):
        creds.verify_token(table, "garbage")
    assert len(calls) == 3
    assert all(len(a) == len(b) == 64 for a, b in calls)


def test_malformed_file_is_an_error_not_an_empty_set(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"version": 1, "credentials": {"zz": {"principal": "p", "sha256": "x"}}}')
    with pytest.raises(ValueError, match="malformed"):
        creds.read_credentials(path)
    path.write_text("not json")
    with pytest.raises(ValueError):
        creds.read_credentials(path)
    assert creds.read_credentials(tmp_path / "absent.json") == {}


def test_principal_is_validated(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidParameter):
        creds.create_credential(tmp_path / "c.json", principal="user admin")
    assert not (tmp_path / "c.json").exists()


def test_revoke(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    token = creds.create_credential(path, principal="user/admin")
    cred_id, _ = creds.parse_token(token) or ("", "")
    assert creds.revoke_credential(path, credential_id=cred_id)
    assert not creds.revoke_credential(path, credential_id=cred_id)
    with pytest.raises(errors.Unauthenticated):
        creds.verify_token(creds.read_credentials(path), token)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_store_reloads_on_change_at_most_once_a_second(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    first = creds.create_credential(path, principal="user/admin")
    clock = FakeClock()
    store = CredentialStore(path, clock=clock)
    assert store.principal_for(first) == "user/admin"

    second = creds.create_credential(path, principal="user/bob")
    with pytest.raises(errors.Unauthenticated):
        store.principal_for(second)  # checked less than a second ago: not re-read yet
    clock.now += 1.01
    assert store.principal_for(second) == "user/bob"

    cred_id, _ = creds.parse_token(first) or ("", "")
    creds.revoke_credential(path, credential_id=cred_id)
    clock.now += 1.01
    with pytest.raises(errors.Unauthenticated):
        store.principal_for(first)

    path.write_text("{broken")  # a bad edit keeps the last good set
    clock.now += 1.01
    assert store.principal_for(second) == "user/bob"

    path.unlink()  # no file: nobody gets in
    clock.now += 1.01
    with pytest.raises(errors.Unauthenticated):
        store.principal_for(second)


def test_bearer_header_parsing() -> None:
    with pytest.raises(errors.Unauthenticated) as info:
        bearer_token({})
    assert info.value.code == MISSING_CODE and info.value.message.startswith("Missing credential")
    with pytest.raises(errors.Unauthenticated) as info:
        bearer_token({"authorization": "Basic dXNlcjpwYXNz"})
    assert info.value.code == "UnrecognizedClientException"
    assert bearer_token({"authorization": "Bearer cfr_x_y"}) == "cfr_x_y"
    assert bearer_token({"authorization": "bearer  cfr_x_y "}) == "cfr_x_y"

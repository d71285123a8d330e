"""The bootstrap keys file names the credentials file a key's secret is in; the store reads the secret from
there only when it derives the file's signing key, and never prints it."""

from __future__ import annotations

import json
from pathlib import Path

from coffer.core.principal import PrincipalKind
from coffer.crypto.access_keys import derive_signing_key, new_access_key_id, new_secret_access_key
from coffer.principal_directory import AccessKeyRecord
from coffer.store.iam_bootstrap import BootstrapKey, bootstrap_entry, read_bootstrap_keys


def _write(path: Path, doc: object) -> None:
    path.write_text(json.dumps(doc), encoding="utf-8")


def test_the_secret_is_read_from_the_named_credentials_file_and_checked(tmp_path: Path) -> None:
    akid, secret = new_access_key_id(), new_secret_access_key()
    creds = tmp_path / "profile.json"
    _write(creds, {"access_key_id": akid, "secret_access_key": secret})
    entry = bootstrap_entry(BootstrapKey(akid, derive_signing_key(secret), credentials_file=str(creds)))
    assert "secret_access_key" not in entry and entry["credentials_file"] == str(creds)
    boot = tmp_path / "iam-bootstrap.json"
    _write(boot, {"keys": [entry]})
    [key] = read_bootstrap_keys(boot)
    assert key.secret_access_key == secret and secret not in repr(key)

    _write(creds, {"access_key_id": akid, "secret_access_key": new_secret_access_key()})  # another secret
    assert read_bootstrap_keys(boot)[0].secret_access_key is None
    creds.unlink()  # not written yet (make run writes the profile after the store starts)
    assert read_bootstrap_keys(boot)[0].secret_access_key is None


def test_an_access_key_records_repr_leaves_the_secret_out() -> None:
    secret = new_secret_access_key()
    record = AccessKeyRecord(
        access_key_id=new_access_key_id(),
        principal_arn="arn:aws:iam::000000000000:user/a",
        account_id="000000000000",
        kind=PrincipalKind.USER,
        name="a",
        unique_id="AIDAAAAAAAAAAAAAAAAAA",
        signing_key=derive_signing_key(secret),
        secret_access_key=secret,
    )
    assert record.secret_access_key == secret and secret not in repr(record) and secret not in str(record)

"""The rotation service's key under ``make run`` / deployinit: a long-term key of IAM user coffer-rotation,
generated once into a 0600 file and kept across restarts (a file of an older release holding a role session
is replaced); the bootstrap keys file carries its signing key only."""

from __future__ import annotations

import json
from pathlib import Path

from coffer.crypto.access_keys import derive_signing_key
from coffer.devrun import iam_keys


def test_the_rotation_key_is_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / iam_keys.ROTATION_FILE_NAME
    first = iam_keys.ensure_rotation_key(path)
    assert first.access_key_id.startswith("AKIA") and first.session_token is None
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == {
        "access_key_id": first.access_key_id,
        "secret_access_key": first.secret_access_key,
    }
    again = iam_keys.ensure_rotation_key(path)
    assert (again.access_key_id, again.secret_access_key) == (first.access_key_id, first.secret_access_key)


def test_an_older_session_file_is_replaced_by_a_user_key(tmp_path: Path) -> None:
    path = tmp_path / iam_keys.ROTATION_FILE_NAME
    path.write_text(
        json.dumps(
            {
                "access_key_id": "ASIA" + "A" * 16,
                "secret_access_key": "s",
                "session_token": "t",
                "expires": "2027-01-01T00:00:00+00:00",
            }
        )
    )
    creds = iam_keys.ensure_rotation_key(path)
    assert creds.access_key_id.startswith("AKIA")
    assert "session_token" not in json.loads(path.read_text())


def test_the_bootstrap_file_holds_the_rotation_users_signing_key(tmp_path: Path) -> None:
    admin = iam_keys.ensure_admin(tmp_path / "profile.json")
    rotation = iam_keys.ensure_rotation_key(tmp_path / iam_keys.ROTATION_FILE_NAME)
    path = tmp_path / iam_keys.BOOTSTRAP_FILE_NAME
    iam_keys.write_bootstrap(path, admin, rotation)
    keys = json.loads(path.read_text())["keys"]
    assert keys[1] == {
        "user": "coffer-rotation",
        "access_key_id": rotation.access_key_id,
        "signing_key": derive_signing_key(rotation.secret_access_key).hex(),
    }
    assert rotation.secret_access_key not in path.read_text()

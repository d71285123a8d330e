"""``coffer admin backup|restore`` refuse, before any database is reached, what they cannot do, with a
message a person can act on and exit 1: a target that is not a new directory, a missing root key file, a
short passphrase, a directory that is not a backup, a damaged backup."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from coffer.cli.admin import _role_passwords
from coffer.cli.main import main


@pytest.fixture(autouse=True)
def no_coffer_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("COFFER_DATABASE_URL", "COFFER_ADMIN_DATABASE_URL", "COFFER_ROOT_KEY_FILE", "COFFER_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("COFFER_BACKUP_PASSPHRASE", raising=False)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_backup_refuses_a_directory_that_holds_files(tmp_path: Path) -> None:
    (tmp_path / "old").write_text("x")
    code, _, err = run("admin", "backup", "--to", str(tmp_path), "--database-url", "postgresql://x/y")
    assert code == 1
    assert "coffer admin backup: " in err and "is not an empty directory" in err


def test_backup_with_the_root_key_needs_the_key_file(tmp_path: Path) -> None:
    code, _, err = run(
        "admin", "backup", "--to", str(tmp_path / "b"), "--home", str(tmp_path), "--include-root-key"
    )
    assert code == 1
    assert f"KMS root key file {tmp_path / 'keys' / 'root.key'} does not exist" in err
    assert "shamir or pkcs11" in err
    assert not (tmp_path / "b").exists()


def test_backup_refuses_a_short_passphrase(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "root.key").write_bytes(b"k" * 32)
    (tmp_path / "pass").write_text("short\n")
    code, _, err = run(
        "admin", "backup", "--to", str(tmp_path / "b"), "--home", str(tmp_path), "--include-root-key",
        "--passphrase-file", str(tmp_path / "pass"),
    )  # fmt: skip
    assert code == 1 and "at least 12 characters" in err
    assert not (tmp_path / "b").exists()


def test_a_passphrase_is_needed_without_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "root.key").write_bytes(b"k" * 32)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(
        "admin", "backup", "--to", str(tmp_path / "b"), "--home", str(tmp_path), "--include-root-key"
    )
    assert code == 1 and "--passphrase-file FILE or set COFFER_BACKUP_PASSPHRASE" in err


def test_backup_without_a_database_says_where_to_give_one(tmp_path: Path) -> None:
    code, _, err = run("admin", "backup", "--to", str(tmp_path / "b"), "--home", str(tmp_path))
    assert code == 1 and "give --database-url" in err
    assert not (tmp_path / "b").exists()


def test_restore_refuses_a_directory_that_is_not_a_backup(tmp_path: Path) -> None:
    code, _, err = run("admin", "restore", "--from", str(tmp_path), "--database-url", "postgresql://x/y")
    assert code == 1
    assert err.strip() == (
        f"coffer admin restore: {tmp_path} holds no manifest.json: it is not a Coffer backup, or its backup "
        "did not finish"
    )


def test_restore_refuses_a_damaged_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "coffer-backup", "format_version": 1}))
    code, _, err = run("admin", "restore", "--from", str(tmp_path), "--database-url", "postgresql://x/y")
    assert code == 1 and "incomplete or malformed" in err


def test_restore_and_backup_need_their_directory() -> None:
    assert run("admin", "restore")[0] == 252
    assert run("admin", "backup")[0] == 252


def test_role_passwords_come_from_the_roles_file_else_deployinit_variables(tmp_path: Path) -> None:
    variables = {"kms": "COFFER_KMS_DB_PASSWORD", "store": "COFFER_STORE_DB_PASSWORD"}
    roles = tmp_path / "db-roles.json"
    roles.write_text(json.dumps({"kms": "k1", "store": "s1"}))
    env = {"COFFER_KMS_DB_PASSWORD": "k2"}
    assert _role_passwords(roles, env, variables) == {"kms": "k1", "store": "s1"}
    assert _role_passwords(None, env, variables) == {"kms": "k2"}
    assert _role_passwords(None, {}, variables) == {}

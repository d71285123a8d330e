"""``coffer admin backup|restore`` refuse, before any database is reached, what they cannot do, with a
message a person can act on and exit 1: a target that is not a new directory, a missing root key file, a
short passphrase, a directory that is not a backup, a damaged backup."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest

from coffer.backup import keyseal
from coffer.backup.manifest import Manifest, RootKeyEntry, TableDump, digest_files
from coffer.backup.snapshot import known_migrations, migration_sets
from coffer.cli.admin import _role_passwords
from coffer.cli.main import main
from coffer.crypto.rootkey import RootKey


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


# ---- verify-backup: a backup made here without a database (the manifest and key files as backup writes them)


def make_backup(directory: Path, passphrase: str) -> tuple[bytes, Manifest]:
    directory.mkdir()
    (directory / "data").mkdir()
    (directory / "data" / "store.secrets.copy.gz").write_bytes(b"ciphertext rows")
    manifest = Manifest(
        created_at="2026-12-02T15:00:00Z",
        region="local-1",
        database="coffer",
        server_version="16",
        coffer_version="0.1.0",
        seal_mode="file",
        root_key_ids=(),
        migrations={schema: tuple(names) for schema, names in known_migrations(migration_sets()).items()},
        tables=(TableDump("store", "secrets", ("id",), 1, "data/store.secrets.copy.gz"),),
        sequences=(),
    )
    secret = b"r" * 32
    manifest = dataclasses.replace(
        manifest,
        files=digest_files(directory, ["data/store.secrets.copy.gz"]),
        root_key_ids=(RootKey(secret).key_id,),
    )
    blob = keyseal.seal(secret, passphrase, name="root.key", data_digest=manifest.data_digest(), n=2**14)
    (directory / "root-key").mkdir()
    (directory / "root-key" / "root.key.json").write_text(json.dumps(blob))
    entry = RootKeyEntry("root.key", "root-key/root.key.json", RootKey(secret).key_id)
    files = {**manifest.files, **digest_files(directory, [entry.file])}
    manifest = dataclasses.replace(manifest, root_keys=(entry,), files=files)
    (directory / "manifest.json").write_text(manifest.to_json())
    return secret, manifest


def test_verify_backup_checks_everything_restore_checks(tmp_path: Path) -> None:
    backup = tmp_path / "b"
    make_backup(backup, "the right passphrase")
    (tmp_path / "pass").write_text("the right passphrase\n")
    code, out, err = run(
        "admin", "verify-backup", "--from", str(backup), "--passphrase-file", str(tmp_path / "pass")
    )
    assert code == 0, err
    assert (
        "checksums and schema version OK" in out and "root.key (" in out and out.endswith("by this Coffer\n")
    )

    (tmp_path / "wrong").write_text("the wrong passphrase\n")
    code, _, err = run(
        "admin", "verify-backup", "--from", str(backup), "--passphrase-file", str(tmp_path / "wrong")
    )
    assert code == 1 and "the passphrase is wrong" in err
    code, out, _ = run("admin", "verify-backup", "--from", str(backup), "--no-root-key")
    assert code == 0 and "not checked" in out


def test_a_data_file_changed_with_its_checksum_stops_the_key_decrypting(tmp_path: Path) -> None:
    """Someone rewrites a data file and its checksum (and the manifest's data digest): the checksums agree,
    but the root key, bound to the digest it was written with, no longer decrypts."""
    import dataclasses

    from coffer.backup.manifest import digest_files

    backup = tmp_path / "b"
    _, manifest = make_backup(backup, "the right passphrase")
    (backup / "data" / "store.secrets.copy.gz").write_bytes(b"forged rows")
    forged = dataclasses.replace(
        manifest, files={**manifest.files, **digest_files(backup, ["data/store.secrets.copy.gz"])}
    )
    (backup / "manifest.json").write_text(forged.to_json())
    (tmp_path / "pass").write_text("the right passphrase\n")
    code, out, err = run(
        "admin", "verify-backup", "--from", str(backup), "--passphrase-file", str(tmp_path / "pass")
    )
    assert "checksums and schema version OK" in out
    assert code == 1 and "the backup was changed after it was written" in err

    # and without rewriting the checksum, the file itself is named
    (backup / "manifest.json").write_text(manifest.to_json())
    code, _, err = run("admin", "verify-backup", "--from", str(backup), "--no-root-key")
    assert code == 1 and "changed since the backup was written" in err and "data/store.secrets.copy.gz" in err

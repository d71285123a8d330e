"""The backup manifest: JSON round trip, the data digest the root key's encryption binds, the checksums of
every file (a missing, changed or unlisted file is refused, a path outside the backup too) and the schema
version check."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from coffer.backup import BackupError
from coffer.backup.manifest import (
    FileDigest,
    Manifest,
    RootKeyEntry,
    SequenceState,
    TableDump,
    check_migrations,
    digest_files,
    safe_relative,
    verify_files,
)


def write_backup(directory: Path) -> Manifest:
    (directory / "data").mkdir()
    (directory / "data" / "store.secrets.copy.gz").write_bytes(b"rows of secrets")
    (directory / "data" / "kms.keys.copy.gz").write_bytes(b"rows of keys")
    tables = (
        TableDump("kms", "keys", ("key_id", "account_id"), 2, "data/kms.keys.copy.gz"),
        TableDump("store", "secrets", ("id", "arn", "name"), 3, "data/store.secrets.copy.gz"),
    )
    manifest = Manifest(
        created_at="2026-12-02T15:00:00Z",
        region="local-1",
        database="coffer",
        server_version="16.4",
        coffer_version="0.1.0",
        seal_mode="file",
        root_key_ids=("0123456789abcdef",),
        migrations={"kms": ("0001_kms_keys",), "store": ("0001_secrets.sql", "0002_rotation.sql")},
        tables=tables,
        sequences=(SequenceState("store", "secrets_id_seq", 3, True),),
    )
    return dataclasses.replace(manifest, files=digest_files(directory, [t.file for t in tables]))


def test_the_manifest_round_trips_through_json(tmp_path: Path) -> None:
    manifest = write_backup(tmp_path)
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.row_counts() == {"kms.keys": 2, "store.secrets": 3}
    assert again.table("store", "secrets") is not None and again.table("store", "nope") is None
    body = json.loads(manifest.to_json())
    assert body["format"] == "coffer-backup" and body["format_version"] == 1
    assert body["data_digest"] == manifest.data_digest()


def test_the_data_digest_covers_the_data_not_the_root_key_entries(tmp_path: Path) -> None:
    manifest = write_backup(tmp_path)
    with_key = dataclasses.replace(
        manifest,
        root_keys=(RootKeyEntry("root.key", "root-key/root.key.json", "0123456789abcdef"),),
        files={**manifest.files, "root-key/root.key.json": FileDigest("ab" * 32, 10)},
    )
    assert with_key.data_digest() == manifest.data_digest()
    other_rows = dataclasses.replace(
        manifest, tables=(dataclasses.replace(manifest.tables[0], rows=99), manifest.tables[1])
    )
    assert other_rows.data_digest() != manifest.data_digest()
    other_file = dataclasses.replace(
        manifest, files={**manifest.files, "data/kms.keys.copy.gz": FileDigest("00" * 32, 12)}
    )
    assert other_file.data_digest() != manifest.data_digest()
    assert dataclasses.replace(manifest, region="local-2").data_digest() != manifest.data_digest()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"format": "something-else"}', "is not the manifest of a Coffer backup"),
        ('{"format": "coffer-backup", "format_version": 2}', "format version 2"),
        ('{"format": "coffer-backup", "format_version": 1}', "incomplete or malformed"),
    ],
)
def test_a_manifest_of_another_kind_is_refused(text: str, message: str) -> None:
    with pytest.raises(BackupError, match=message):
        Manifest.from_json(text)


def test_a_manifest_changed_after_the_backup_is_refused(tmp_path: Path) -> None:
    body = json.loads(write_backup(tmp_path).to_json())
    body["tables"][1]["rows"] = 4
    with pytest.raises(BackupError, match="was changed after the backup was written"):
        Manifest.from_json(json.dumps(body))


def test_verify_files_accepts_the_backup_as_written(tmp_path: Path) -> None:
    verify_files(tmp_path, write_backup(tmp_path))


def test_a_changed_or_missing_file_is_named(tmp_path: Path) -> None:
    manifest = write_backup(tmp_path)
    (tmp_path / "data" / "kms.keys.copy.gz").write_bytes(b"rows of kEys")  # same size, other bytes
    (tmp_path / "data" / "store.secrets.copy.gz").unlink()
    with pytest.raises(BackupError) as caught:
        verify_files(tmp_path, manifest)
    message = caught.value.message
    assert "missing: data/store.secrets.copy.gz" in message
    assert "changed since the backup was written (size or SHA-256 differs): data/kms.keys.copy.gz" in message


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    manifest = write_backup(tmp_path)
    (tmp_path / "data" / "kms.keys.copy.gz").write_bytes(b"rows of")
    with pytest.raises(BackupError, match=r"data/kms\.keys\.copy\.gz"):
        verify_files(tmp_path, manifest)


def test_a_table_without_a_checksum_is_refused(tmp_path: Path) -> None:
    manifest = write_backup(tmp_path)
    files = dict(manifest.files)
    del files["data/kms.keys.copy.gz"]
    with pytest.raises(BackupError, match=r"gives no checksum for data/kms\.keys\.copy\.gz"):
        verify_files(tmp_path, dataclasses.replace(manifest, files=files))


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside", "data/../../x", "", "."])
def test_paths_outside_the_backup_are_refused(path: str) -> None:
    with pytest.raises(BackupError, match="outside the backup directory"):
        safe_relative(path)


def test_paths_inside_the_backup_are_accepted() -> None:
    assert str(safe_relative("data/store.secrets.copy.gz")) == "data/store.secrets.copy.gz"


KNOWN = {"kms": ["0001_a", "0002_b"], "store": ["0001_a.sql", "0002_b.sql", "0003_c.sql"]}


def test_the_same_or_an_older_schema_version_is_restorable() -> None:
    check_migrations(KNOWN, KNOWN)
    check_migrations({"kms": ["0001_a"], "store": ["0001_a.sql"]}, KNOWN)


def test_a_backup_of_a_newer_coffer_is_refused() -> None:
    newer = {"kms": ["0001_a", "0002_b"], "store": ["0001_a.sql", "0002_b.sql", "0003_c.sql", "0004_d.sql"]}
    with pytest.raises(
        BackupError, match=r"made by a newer Coffer: schema 'store' has migration\(s\) 0004_d"
    ):
        check_migrations(newer, KNOWN)


def test_a_schema_version_that_is_not_a_prefix_is_refused() -> None:
    with pytest.raises(BackupError, match="not a prefix"):
        check_migrations({"kms": ["0002_b"], "store": KNOWN["store"]}, KNOWN)


def test_a_backup_without_a_schema_is_refused() -> None:
    with pytest.raises(BackupError, match="no schema version for kms"):
        check_migrations({"store": KNOWN["store"]}, KNOWN)
    with pytest.raises(BackupError, match="schema 'other'"):
        check_migrations({**KNOWN, "other": ["0001_x"]}, KNOWN)

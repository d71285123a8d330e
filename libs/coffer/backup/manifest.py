"""The manifest of a backup directory (``manifest.json``) and the checks a restore makes before it touches
anything.

A backup directory holds::

    manifest.json                 this: format, time, region, schema version, tables, sequences, checksums
    data/<schema>.<table>.copy.gz every row of one table, PostgreSQL COPY text format, gzip
    root-key/<name>.json          only with --include-root-key: the root key under the passphrase (keyseal)

``files`` gives the SHA-256 and size of every other file, so a restore refuses a backup that is incomplete,
truncated or changed. ``data_digest`` is the SHA-256 of everything the manifest says about the data (the
checksums of the data files included); the encrypted root key binds it as associated data, so when the root
key is in the backup a data file changed together with its checksum is caught too (the root key no longer
decrypts). A backup without the root key has no secret to authenticate it with: its checksums find damage,
not a forger who rewrites the manifest as well.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from coffer.backup import BackupError

FORMAT = "coffer-backup"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DATA_DIR = "data"
ROOT_KEY_DIR = "root-key"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class TableDump:
    """One table's rows: in ``file``, COPY text format, with these columns in this order."""

    schema: str
    name: str
    columns: tuple[str, ...]
    rows: int
    file: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True, slots=True)
class SequenceState:
    """A sequence's position when the snapshot was taken (``setval(name, last_value, is_called)``)."""

    schema: str
    name: str
    last_value: int
    is_called: bool


@dataclass(frozen=True, slots=True)
class RootKeyEntry:
    """One root key file of the deployment (``root.key``, and ``root.key.next`` while a rotation runs),
    encrypted in ``file``; ``key_id`` is the id the kms records for it (never the key)."""

    name: str
    file: str
    key_id: str


@dataclass(frozen=True, slots=True)
class FileDigest:
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    created_at: str
    region: str
    database: str
    server_version: str
    coffer_version: str
    #: The kms's seal mode the data says it was in: "file", "shamir" or "pkcs11".
    seal_mode: str
    #: The root key ids the stored key material is wrapped under (the root key the restore needs).
    root_key_ids: tuple[str, ...]
    #: Each schema's applied migrations, as its ``schema_migrations`` records them, in order.
    migrations: Mapping[str, tuple[str, ...]]
    tables: tuple[TableDump, ...]
    sequences: tuple[SequenceState, ...]
    root_keys: tuple[RootKeyEntry, ...] = ()
    files: Mapping[str, FileDigest] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    # ---- what the root key's encryption binds
    def data_digest(self) -> str:
        """SHA-256 over a canonical JSON of everything about the data (not the root key entries)."""
        body = self._body()
        body.pop("root_keys")
        body["files"] = {
            path: body["files"][path] for path in sorted(body["files"]) if not _is_root_key_file(path)
        }
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def table(self, schema: str, name: str) -> TableDump | None:
        for table in self.tables:
            if table.schema == schema and table.name == name:
                return table
        return None

    def row_counts(self) -> dict[str, int]:
        return {t.qualified: t.rows for t in self.tables}

    # ---- JSON
    def _body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "created_at": self.created_at,
            "region": self.region,
            "database": self.database,
            "server_version": self.server_version,
            "coffer_version": self.coffer_version,
            "seal_mode": self.seal_mode,
            "root_key_ids": list(self.root_key_ids),
            "migrations": {schema: list(names) for schema, names in sorted(self.migrations.items())},
            "tables": [
                {
                    "schema": t.schema,
                    "name": t.name,
                    "columns": list(t.columns),
                    "rows": t.rows,
                    "file": t.file,
                }
                for t in self.tables
            ],
            "sequences": [
                {"schema": s.schema, "name": s.name, "last_value": s.last_value, "is_called": s.is_called}
                for s in self.sequences
            ],
            "root_keys": [{"name": k.name, "file": k.file, "key_id": k.key_id} for k in self.root_keys],
            "files": {path: {"sha256": d.sha256, "size": d.size} for path, d in sorted(self.files.items())},
        }

    def to_json(self) -> str:
        body = self._body()
        body["data_digest"] = self.data_digest()
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse ``manifest.json``; a manifest of another format or version, or a malformed one, is a
        :class:`BackupError`."""
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BackupError(f"{MANIFEST_NAME} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise BackupError(f"{MANIFEST_NAME} is not the manifest of a Coffer backup")
        version = body.get("format_version")
        if version != FORMAT_VERSION:
            raise BackupError(
                f"this backup has format version {version!r}; this Coffer reads version {FORMAT_VERSION} only"
            )
        try:
            manifest = cls(
                created_at=str(body["created_at"]),
                region=str(body["region"]),
                database=str(body["database"]),
                server_version=str(body["server_version"]),
                coffer_version=str(body["coffer_version"]),
                seal_mode=str(body["seal_mode"]),
                root_key_ids=tuple(str(k) for k in body["root_key_ids"]),
                migrations={str(s): tuple(str(n) for n in names) for s, names in body["migrations"].items()},
                tables=tuple(
                    TableDump(
                        schema=str(t["schema"]),
                        name=str(t["name"]),
                        columns=tuple(str(c) for c in t["columns"]),
                        rows=int(t["rows"]),
                        file=str(t["file"]),
                    )
                    for t in body["tables"]
                ),
                sequences=tuple(
                    SequenceState(
                        schema=str(s["schema"]),
                        name=str(s["name"]),
                        last_value=int(s["last_value"]),
                        is_called=bool(s["is_called"]),
                    )
                    for s in body["sequences"]
                ),
                root_keys=tuple(
                    RootKeyEntry(name=str(k["name"]), file=str(k["file"]), key_id=str(k["key_id"]))
                    for k in body["root_keys"]
                ),
                files={
                    str(p): FileDigest(sha256=str(d["sha256"]), size=int(d["size"]))
                    for p, d in body["files"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BackupError(
                f"{MANIFEST_NAME} is incomplete or malformed ({type(exc).__name__}: {exc})"
            ) from None
        if body.get("data_digest") != manifest.data_digest():
            raise BackupError(
                f"{MANIFEST_NAME} was changed after the backup was written (its data digest does not match)"
            )
        return manifest


def _is_root_key_file(path: str) -> bool:
    return PurePosixPath(path).parts[:1] == (ROOT_KEY_DIR,)


def safe_relative(path: str) -> PurePosixPath:
    """``path`` as a relative path inside the backup directory (no absolute path, no ``..``)."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or any(part in ("", ".", "..") for part in pure.parts):
        raise BackupError(f"{MANIFEST_NAME} names a file outside the backup directory: {path!r}")
    return pure


def digest_file(path: Path) -> FileDigest:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return FileDigest(sha256=sha.hexdigest(), size=size)


def digest_files(directory: Path, paths: Sequence[str]) -> dict[str, FileDigest]:
    return {path: digest_file(directory / safe_relative(path)) for path in paths}


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Every file the manifest lists is there, with its size and SHA-256; every table's and root key's file
    is listed. Raises :class:`BackupError` naming every file that is missing or differs."""
    listed = set(manifest.files)
    referenced = [t.file for t in manifest.tables] + [k.file for k in manifest.root_keys]
    unlisted = [path for path in referenced if path not in listed]
    if unlisted:
        raise BackupError(f"{MANIFEST_NAME} gives no checksum for {', '.join(sorted(unlisted))}")
    missing: list[str] = []
    changed: list[str] = []
    for path, expected in sorted(manifest.files.items()):
        target = directory / safe_relative(path)
        if not target.is_file():
            missing.append(path)
            continue
        if digest_file(target) != expected:
            changed.append(path)
    problems = []
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if changed:
        problems.append(
            f"changed since the backup was written (size or SHA-256 differs): {', '.join(changed)}"
        )
    if problems:
        raise BackupError(f"the backup in {directory} is incomplete or damaged; " + "; ".join(problems))


def check_migrations(backup: Mapping[str, Sequence[str]], known: Mapping[str, Sequence[str]]) -> None:
    """The backup's schema version is one this Coffer can restore: for each schema, the migrations the
    backup had applied are this Coffer's first ones, in the same order (a restore applies exactly those,
    loads the rows, and the services apply the newer ones when they start)."""
    missing = sorted(set(known) - set(backup))
    if missing:
        raise BackupError(f"the backup holds no schema version for {', '.join(missing)}: it is not complete")
    for schema, applied in sorted(backup.items()):
        if schema not in known:
            raise BackupError(f"the backup holds schema {schema!r}, which this Coffer does not have")
        ours = list(known[schema])
        unknown = [name for name in applied if name not in ours]
        if unknown:
            raise BackupError(
                f"the backup was made by a newer Coffer: schema {schema!r} has migration(s) "
                f"{', '.join(unknown)} that this Coffer does not know; restore it with that version or later"
            )
        if list(applied) != ours[: len(applied)]:
            raise BackupError(
                f"schema {schema!r} of the backup has migrations {', '.join(applied)}, not a prefix of this "
                f"Coffer's ({', '.join(ours)}): the backup cannot be restored by this version"
            )

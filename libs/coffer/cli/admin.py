"""``coffer admin``: backup and restore of a deployment (beyond AWS). They talk to PostgreSQL directly, as
its administrator, never to the services.

- ``coffer admin backup --to DIR [--include-root-key] [--passphrase-file FILE]``: a consistent snapshot of
  the database (``coffer.backup``); with ``--include-root-key`` also the KMS root key file (file seal; and
  its successor while a root rotation runs) and the store's audit-digest signing key
  (``<pki>/audit-signing.key``, so the restored trail's signed digests still verify on a new machine), each
  encrypted under a passphrase (``--passphrase-file``, else ``COFFER_BACKUP_PASSPHRASE``, else asked twice on
  the terminal).
- ``coffer admin restore --from DIR [--force] [--no-root-key]``: checks the backup (manifest, checksums,
  schema version, passphrase) before touching anything, then loads it into an empty database and puts the
  keys back (refusing to replace another key, or a database that holds Coffer's data, without ``--force``).
  Stop the services first (it refuses while they are connected); start them after.
- ``coffer admin verify-backup --from DIR``: the checks restore makes first (and the passphrase, unless
  ``--no-root-key``), changing nothing.

Where: ``--database-url`` (a PostgreSQL superuser's URL of the deployment's database), else
``COFFER_ADMIN_DATABASE_URL``, else ``COFFER_DATABASE_URL``, else the embedded server of ``make run`` in
``--home`` (default ``COFFER_HOME``, else ``.coffer``; started for the command when it is not running). The
root key file is ``--root-key-file``, else ``COFFER_ROOT_KEY_FILE``, else ``<home>/keys/root.key``. Exit 0
when done, 1 when refused or failed (the reason on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from coffer import dbroles
from coffer.backup import BackupError, keyseal
from coffer.backup.manifest import (
    MANIFEST_NAME,
    ROOT_KEY_DIR,
    Manifest,
    RootKeyEntry,
    check_migrations,
    digest_files,
    safe_relative,
    verify_files,
)
from coffer.cli.admin_commands import PASSPHRASE_VAR
from coffer.crypto.rootkey import RootKey

EXIT_OK = 0
EXIT_FAILED = 1
ROOT_KEY_NAME = "root.key"
NEXT_ROOT_KEY_NAME = "root.key.next"  # coffer.kms.rekey.next_file: a root rotation's new key
AUDIT_KEY_NAME = "audit-signing.key"  # coffer.pki.AUDIT_KEY: the store's audit-digest signing key


@dataclass(frozen=True)
class _KeyFile:
    """A key kept outside the database that goes into the backup, encrypted (``--include-root-key``)."""

    name: str
    path: Path
    key_id: str
    secret: bytes


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home or os.environ.get("COFFER_HOME") or ".coffer").resolve()


def _root_key_file(args: argparse.Namespace) -> Path:
    if args.root_key_file:
        return Path(args.root_key_file)
    env = os.environ.get("COFFER_ROOT_KEY_FILE")
    return Path(env) if env else _home(args) / "keys" / ROOT_KEY_NAME


def _pki_dir(args: argparse.Namespace) -> Path:
    return Path(args.pki_dir) if args.pki_dir else _home(args) / "pki"


def _key_path(args: argparse.Namespace, name: str) -> Path:
    """Where the key file called ``name`` in a backup belongs in this deployment."""
    root_key_file = _root_key_file(args)
    if name == ROOT_KEY_NAME:
        return root_key_file
    if name == NEXT_ROOT_KEY_NAME:
        return root_key_file.with_name(root_key_file.name + ".next")
    if name == AUDIT_KEY_NAME:
        return _pki_dir(args) / AUDIT_KEY_NAME
    raise BackupError(f"the backup holds a key file of unknown name {name!r}")


def _key_id(name: str, secret: bytes) -> str:
    """The id of a key file's key: the root key's own id (as the kms records it); for the audit signing key,
    the start of the SHA-256 of its public key."""
    if name != AUDIT_KEY_NAME:
        return RootKey(secret).key_id
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(secret, password=None)
    except ValueError:
        raise BackupError(f"the {name} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BackupError(f"the {name} is not an Ed25519 key")
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(public).hexdigest()[:16]


def _region(args: argparse.Namespace) -> str:
    return str(getattr(args, "region", None) or os.environ.get("COFFER_REGION") or "local-1")


@contextlib.contextmanager
def _database_url(args: argparse.Namespace, err: TextIO, *, create: bool = False) -> Iterator[str]:
    """The administrator's URL of the deployment's database (see the module doc); the embedded server of
    ``make run`` is started for the command and stopped after it when it was not running (``create``: made
    first when ``<home>/pg`` was wiped, for a restore)."""
    for url in (
        args.database_url,
        os.environ.get("COFFER_ADMIN_DATABASE_URL"),
        os.environ.get("COFFER_DATABASE_URL"),
    ):
        if url:
            yield url
            return
    from coffer.devrun.config import DATABASE_NAME
    from coffer.embedded import EmbeddedPostgres

    home = _home(args)
    data_dir = home / "pg"
    if not data_dir.exists() and not (create and home.is_dir()):
        raise BackupError(
            f"no database given and no embedded PostgreSQL in {home}: give --database-url (a superuser's URL "
            "of the deployment's database) or COFFER_ADMIN_DATABASE_URL, or --home of a `make run` deployment"
        )
    server = EmbeddedPostgres(data_dir)
    running = (data_dir / "postmaster.pid").exists()
    if not running:
        made = "a new" if not data_dir.exists() else "the"
        print(f"coffer admin: starting {made} embedded PostgreSQL in {data_dir} for this command", file=err)
        server.start()
    try:
        yield server.url(DATABASE_NAME)
    finally:
        if not running:
            server.stop()


def _read_passphrase(args: argparse.Namespace, *, confirm: bool) -> str:
    if args.passphrase_file:
        try:
            text = Path(args.passphrase_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise BackupError(
                f"cannot read the passphrase file {args.passphrase_file}: {exc.strerror}"
            ) from None
        return text[:-1] if text.endswith("\n") else text
    from_env = os.environ.get(PASSPHRASE_VAR)
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise BackupError(
            f"a passphrase is needed: give --passphrase-file FILE or set {PASSPHRASE_VAR} "
            "(there is no terminal to ask on)"
        )
    first = getpass.getpass("Backup passphrase: ")
    if confirm and getpass.getpass("Same passphrase again: ") != first:
        raise BackupError("the two passphrases differ")
    return first


def _coffer_version() -> str:
    try:
        return importlib.metadata.version("coffer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


# ------------------------------------------------------------------------------------------------- backup


def _backup(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from coffer.backup import snapshot
    from coffer.rootkey_file import RootKeyFileError, load_root_key

    target = Path(args.to)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} exists and is not an empty directory: back up into a new one")
    key_files: list[_KeyFile] = []
    passphrase = ""
    if args.include_root_key:
        try:
            for name in (ROOT_KEY_NAME, NEXT_ROOT_KEY_NAME):
                path = _key_path(args, name)
                if name == ROOT_KEY_NAME or path.exists():
                    key = load_root_key(path)
                    key_files.append(_KeyFile(name, path, key.key_id, _secret_of(path)))
        except RootKeyFileError as exc:
            raise BackupError(
                f"{exc} (--include-root-key copies the file seal's root key; under the shamir or pkcs11 "
                "seal the database already holds what the backup needs: keep the unseal shares or the HSM "
                "key instead)"
            ) from None
        audit_key = _key_path(args, AUDIT_KEY_NAME)
        if audit_key.is_file():
            secret = audit_key.read_bytes()
            key_files.append(_KeyFile(AUDIT_KEY_NAME, audit_key, _key_id(AUDIT_KEY_NAME, secret), secret))
        else:
            print(
                f"note: no audit signing key at {audit_key} (--pki-dir): not in the backup; keep it with "
                "the PKI, or verify the restored trail with the public key exported earlier",
                file=err,
            )
        passphrase = _read_passphrase(args, confirm=True)
        keyseal.check_passphrase(passphrase)

    created = not target.exists()
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        with _database_url(args, err) as url:
            print(f"backing up {dbroles.database_of(url)!r} to {target}", file=out)
            dumped = asyncio.run(
                snapshot.dump(
                    url,
                    target,
                    region=_region(args),
                    coffer_version=_coffer_version(),
                    echo=lambda line: print(line, file=out),
                )
            )
        manifest = replace(dumped.manifest, files=digest_files(target, dumped.data_files))
        if args.include_root_key:
            manifest = _add_key_files(target, manifest, key_files, passphrase)
        tmp = target / f".{MANIFEST_NAME}.tmp"
        _write_private(tmp, manifest.to_json())
        os.replace(tmp, target / MANIFEST_NAME)
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:  # it was empty: leave it so
            for child in target.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    rows = sum(t.rows for t in manifest.tables)
    root = (
        "root key included ("
        + ", ".join(f"{k.name} {k.key_id}" for k in manifest.root_keys)
        + "), under the passphrase"
        if manifest.root_keys
        else "root key NOT included (keep the root key file, unseal shares or HSM key apart)"
    )
    print(
        f"backup written to {target}: {len(manifest.tables)} tables, {rows} rows, "
        f"seal {manifest.seal_mode}, {root}",
        file=out,
    )
    return EXIT_OK


def _secret_of(path: Path) -> bytes:
    from coffer.crypto.rootkey import ROOT_KEY_SIZE

    data = path.read_bytes()
    return data if len(data) == ROOT_KEY_SIZE else bytes.fromhex(data.strip().decode("ascii"))


def _add_key_files(target: Path, manifest: Manifest, key_files: list[_KeyFile], passphrase: str) -> Manifest:
    if manifest.seal_mode != "file":
        raise BackupError(
            f"the kms uses the {manifest.seal_mode} seal: its root key is in the database (encrypted), "
            "not in a file; back up without --include-root-key and keep the unseal shares or the HSM key"
        )
    ids = {k.key_id for k in key_files if k.name != AUDIT_KEY_NAME}
    unknown = [key_id for key_id in manifest.root_key_ids if key_id not in ids]
    if unknown:
        raise BackupError(
            f"the key material is wrapped under root key id(s) {', '.join(unknown)}, and the root key "
            f"file holds {', '.join(sorted(ids))}: point --root-key-file (or COFFER_ROOT_KEY_FILE) at "
            "this deployment's key (or, if a root rotation or seal migration is under way, back up when it "
            "has finished: coffer operator status)"
        )
    key_dir = target / ROOT_KEY_DIR
    key_dir.mkdir(mode=0o700)
    digest = manifest.data_digest()
    entries = []
    for key_file in key_files:
        blob = keyseal.seal(key_file.secret, passphrase, name=key_file.name, data_digest=digest)
        relative = f"{ROOT_KEY_DIR}/{key_file.name}.json"
        _write_private(target / safe_relative(relative), json.dumps(blob, indent=2) + "\n")
        entries.append(RootKeyEntry(name=key_file.name, file=relative, key_id=key_file.key_id))
    files = dict(manifest.files)
    files.update(digest_files(target, [e.file for e in entries]))
    return replace(manifest, root_keys=tuple(entries), files=files)


# ------------------------------------------------------------------------------------------------ restore


def _checked_backup(source: Path, out: TextIO) -> Manifest:
    """The backup's manifest, once its format, every file's checksum and its schema version are checked."""
    from coffer.backup import snapshot

    try:
        text = (source / MANIFEST_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BackupError(
            f"{source} holds no {MANIFEST_NAME}: it is not a Coffer backup, or its backup did not finish"
        ) from None
    except OSError as exc:
        raise BackupError(f"cannot read {source / MANIFEST_NAME}: {exc.strerror}") from None
    manifest = Manifest.from_json(text)
    verify_files(source, manifest)
    check_migrations(manifest.migrations, snapshot.known_migrations(snapshot.migration_sets()))
    print(
        f"backup of {manifest.created_at} (region {manifest.region}, database {manifest.database!r}, "
        f"Coffer {manifest.coffer_version}, {len(manifest.tables)} tables, "
        f"{sum(t.rows for t in manifest.tables)} rows): checksums and schema version OK",
        file=out,
    )
    return manifest


def _open_keys(
    args: argparse.Namespace, source: Path, manifest: Manifest
) -> list[tuple[RootKeyEntry, bytes]]:
    """Every key file in the backup, decrypted with the passphrase and checked against its manifest entry."""
    passphrase = _read_passphrase(args, confirm=False)
    opened = []
    for entry in manifest.root_keys:
        blob = _read_json(source / safe_relative(entry.file))
        secret = keyseal.open_sealed(blob, passphrase, name=entry.name, data_digest=manifest.data_digest())
        if _key_id(entry.name, secret) != entry.key_id:
            raise BackupError(f"the {entry.name} in the backup is not the one its manifest names")
        opened.append((entry, secret))
    return opened


def _verify_backup(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``coffer admin verify-backup --from DIR``: what restore checks before it changes anything, without
    changing anything (the keys too, when the backup holds them and --no-root-key is not given)."""
    source = Path(args.from_dir)
    manifest = _checked_backup(source, out)
    if manifest.root_keys and not args.no_root_key:
        for entry, _secret in _open_keys(args, source, manifest):
            print(f"{entry.name} ({entry.key_id}) decrypts with the passphrase", file=out)
    elif manifest.root_keys:
        print("key files not checked (--no-root-key)", file=out)
    else:
        print("no key files in this backup (the root key is kept apart)", file=out)
    print(f"OK: {source} can be restored by this Coffer", file=out)
    return EXIT_OK


def _restore(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from coffer.backup import snapshot
    from coffer.deployinit import PASSWORD_VARS
    from coffer.devrun.config import DB_ROLES_FILE
    from coffer.kms.rekey import write_key_file

    source = Path(args.from_dir)
    manifest = _checked_backup(source, out)

    # The keys first: a wrong passphrase or a conflicting key file stops the restore before it starts.
    root_file = _root_key_file(args)
    keys_to_write: list[tuple[Path, bytes]] = []
    if manifest.root_keys and not args.no_root_key:
        for entry, secret in _open_keys(args, source, manifest):
            path = _key_path(args, entry.name)
            if path.exists():
                try:
                    existing = _key_id(
                        entry.name, _secret_of(path) if entry.name != AUDIT_KEY_NAME else path.read_bytes()
                    )
                except (BackupError, ValueError, OSError):
                    existing = "unreadable"
                if existing == entry.key_id:
                    continue
                if not args.force:
                    raise BackupError(
                        f"{path} holds another key (id {existing}; the backup's {entry.name} is "
                        f"{entry.key_id}): move it away, or give --force to replace it"
                    )
            keys_to_write.append((path, secret))

    home = _home(args)
    roles_file = home / DB_ROLES_FILE
    with _database_url(args, err, create=True) as url:
        use_file = roles_file.exists() or (home / "pg").exists()
        passwords = _role_passwords(roles_file if use_file else None, os.environ, PASSWORD_VARS)
        restored = asyncio.run(
            snapshot.restore(
                url,
                source,
                manifest,
                passwords=passwords,
                keep_unknown_passwords=True,
                force=args.force,
                echo=lambda line: print(line, file=out),
            )
        )
        if use_file:
            dbroles.write_passwords(roles_file, restored.passwords)
        else:
            made = sorted(set(restored.passwords) - set(passwords))
            if made:
                names = ", ".join(dbroles.role_name(dbroles.database_of(url), s) for s in made)
                variables = ", ".join(PASSWORD_VARS[s] for s in made)
                print(
                    f"warning: the role(s) {names} did not exist and were made with random passwords: "
                    f"give them the services' passwords ({variables}; python -m coffer.deployinit --roles) "
                    "before starting the services",
                    file=err,
                )
    for path, secret in keys_to_write:
        write_key_file(path, secret)
        print(f"key restored to {path}", file=out)
    _check_root_key(manifest, root_file, bool(keys_to_write), err)
    print(
        f"restored {sum(restored.rows.values())} rows into {dbroles.database_of(url)!r}; "
        "start the services (they apply any newer migrations)",
        file=out,
    )
    return EXIT_OK


def _role_passwords(
    roles_file: Path | None, env: Mapping[str, str], variables: Mapping[str, str]
) -> dict[str, str]:
    """The database roles' passwords the deployment's services log in with: ``make run``'s roles file,
    else ``deployinit``'s variables, else none known."""
    if roles_file is not None:
        return dbroles.read_passwords(roles_file)
    return {service: env[var] for service, var in variables.items() if env.get(var)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"cannot read {path}: {exc}") from None


def _check_root_key(manifest: Manifest, root_file: Path, restored: bool, err: TextIO) -> None:
    """Warn when the kms will not find the root key the restored data needs (file seal)."""
    if manifest.seal_mode != "file" or restored or not manifest.root_key_ids:
        return
    from coffer.rootkey_file import RootKeyFileError, load_root_key

    try:
        key_id = load_root_key(root_file).key_id
    except RootKeyFileError as exc:
        print(f"warning: the kms will not start until its root key is back: {exc}", file=err)
        return
    if key_id not in manifest.root_key_ids:
        print(
            f"warning: {root_file} holds root key {key_id}, but the restored key material is wrapped under "
            f"{', '.join(manifest.root_key_ids)}: put that root key there before starting the kms",
            file=err,
        )


# ------------------------------------------------------------------------------------------------ parser


Handler = Callable[[argparse.Namespace, TextIO, TextIO], int]


def _handler(run: Handler, command: str) -> Handler:
    def handle(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        import asyncpg

        try:
            return run(args, out, err)
        except BackupError as exc:
            print(f"coffer admin {command}: {exc.message}", file=err)
        except asyncpg.PostgresError as exc:
            print(f"coffer admin {command}: PostgreSQL: {type(exc).__name__}: {exc}", file=err)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"coffer admin {command}: {exc.strerror or exc}{where}", file=err)
        return EXIT_FAILED

    return handle

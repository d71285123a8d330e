"""The ``coffer admin`` command line (backup, restore, verify-backup): only the arguments, so that every
other ``coffer`` command starts without importing what backups need (asyncpg, the backup format); the
commands themselves are in :mod:`coffer.cli.admin`, imported when one runs."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

PASSPHRASE_VAR = "COFFER_BACKUP_PASSPHRASE"


def _lazy(name: str, command: str) -> Any:
    def handle(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        from coffer.cli import admin

        return admin._handler(getattr(admin, name), command)(args, out, err)

    return handle


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        metavar="URL",
        help="a PostgreSQL superuser's URL of the deployment's database "
        "(default: COFFER_ADMIN_DATABASE_URL, COFFER_DATABASE_URL, or make run's embedded server in --home)",
    )
    parser.add_argument(
        "--home", default=None, metavar="DIR", help="the deployment's COFFER_HOME (default .coffer)"
    )
    parser.add_argument(
        "--root-key-file",
        default=None,
        metavar="FILE",
        help="the KMS root key file (default: COFFER_ROOT_KEY_FILE or <home>/keys/root.key)",
    )
    parser.add_argument(
        "--pki-dir",
        default=None,
        metavar="DIR",
        help="the issuing PKI directory, whose audit-signing.key goes with the root key (default <home>/pki)",
    )
    parser.add_argument(
        "--passphrase-file",
        default=None,
        metavar="FILE",
        help=f"the passphrase of the root key in the backup (default: {PASSPHRASE_VAR}, else asked)",
    )


def add_admin_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    admin = commands.add_parser("admin", help="backup and restore of the deployment (administrators)")
    actions = admin.add_subparsers(dest="admin_command", metavar="ACTION", parser_class=parser_class)
    actions.required = True
    backup = actions.add_parser(
        "backup", help="a consistent snapshot of the database (and the root key, encrypted, if asked)"
    )
    backup.add_argument("--to", required=True, metavar="DIR", help="a new (or empty) directory")
    backup.add_argument(
        "--include-root-key",
        action="store_true",
        help="also the KMS root key file (file seal) and the audit signing key, encrypted under a passphrase",
    )
    _where(backup)
    backup.set_defaults(handler=_lazy("_backup", "backup"))
    restore = actions.add_parser(
        "restore", help="load a backup into an empty database and put the root key back (services stopped)"
    )
    restore.add_argument("--from", dest="from_dir", required=True, metavar="DIR", help="the backup directory")
    restore.add_argument(
        "--force",
        action="store_true",
        help="replace Coffer's data in a database that holds some, and a different root key file",
    )
    restore.add_argument(
        "--no-root-key",
        action="store_true",
        help="leave the key files alone even if the backup holds them (no passphrase needed)",
    )
    _where(restore)
    restore.set_defaults(handler=_lazy("_restore", "restore"))
    verify = actions.add_parser(
        "verify-backup",
        help="check a backup as restore would (manifest, checksums, schema version, passphrase); "
        "changes nothing",
    )
    verify.add_argument("--from", dest="from_dir", required=True, metavar="DIR", help="the backup directory")
    verify.add_argument("--no-root-key", action="store_true", help="do not decrypt the key files")
    verify.add_argument("--passphrase-file", default=None, metavar="FILE", help="the backup's passphrase")
    verify.set_defaults(handler=_lazy("_verify_backup", "verify-backup"))

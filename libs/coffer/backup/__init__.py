"""``coffer admin backup`` / ``coffer admin restore``: a consistent snapshot of one deployment's database and,
only when asked, its KMS root key encrypted under a passphrase.

- :mod:`~coffer.backup.manifest`: the backup's manifest (what was dumped, the schema version, the SHA-256 of
  every file) and its checks. Pure, apart from reading the files it hashes.
- :mod:`~coffer.backup.keyseal`: the root key under a passphrase (scrypt, then AES-256-GCM). Pure.
- :mod:`~coffer.backup.snapshot`: the dump (one REPEATABLE READ, read-only transaction, ``COPY`` of every
  table of the ``kms`` and ``store`` schemas) and the restore (roles and schemas through ``coffer.dbroles``,
  tables through the services' own migrations, rows through ``COPY``, sequences reset). asyncpg I/O.
"""

from __future__ import annotations


class BackupError(Exception):
    """A backup or restore that cannot go on, with a message a person can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

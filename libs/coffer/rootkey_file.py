"""The KMS root key on disk: 32 random bytes in a 0600 file (directory 0700) outside the data directory.

``ensure_root_key`` is what ``make run`` calls once per deployment; the kms service only ever *loads* the key
(``load_root_key``) and fails with a clear message when it is missing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from coffer.crypto.rootkey import ROOT_KEY_SIZE, RootKey


class RootKeyFileError(RuntimeError):
    """The root key file is missing or unusable."""


def load_root_key(path: Path) -> RootKey:
    """Read the root key from ``path``: 32 raw bytes (64 hex characters are accepted too)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RootKeyFileError(
            f"KMS root key file {path} does not exist. Create it once per deployment with "
            f"coffer.rootkey_file.ensure_root_key (make run does this), or point COFFER_ROOT_KEY_FILE at it."
        ) from None
    except OSError as exc:
        raise RootKeyFileError(f"cannot read the KMS root key file {path}: {exc.strerror}") from None
    if len(data) != ROOT_KEY_SIZE:
        text = data.strip()
        try:
            data = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            data = b""
        if len(data) != ROOT_KEY_SIZE:
            raise RootKeyFileError(
                f"KMS root key file {path} must hold exactly {ROOT_KEY_SIZE} bytes "
                f"(or {2 * ROOT_KEY_SIZE} hex characters)"
            )
    return RootKey(data)


def ensure_root_key(path: Path) -> RootKey:
    """Create the root key file if it is missing (parent directory 0700, file 0600, written atomically so a
    concurrent creator cannot leave a torn key), then load it."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(ROOT_KEY_SIZE))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process created it first: keep theirs
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return load_root_key(path)

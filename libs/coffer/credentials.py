"""Bearer credentials for the public gateway, and the file that stores them.

A token looks like ``cfr_<id>_<secret>``: ``id`` is 16 lowercase hex characters (public, used to find the
entry), ``secret`` is 32 random bytes in unpadded URL-safe base64. The credentials file (JSON, mode 0600)
keeps, per id, the principal it authenticates (``user/admin``) and the SHA-256 of the whole token — tokens
carry 256 random bits, so a fast hash is the right tool (no password-stretching needed) — compared with
``hmac.compare_digest``. The token itself is shown once, when it is created, and never stored.

A credential may expire (``expires``, ISO-8601 UTC; absent: never): from that instant the gateway refuses it
with ``ExpiredTokenException``. Rotating a principal's credential replaces every credential of that principal
with a new one (the old tokens stop working as soon as the gateway re-reads the file, within a second).

File format::

    {"version": 1,
     "credentials": {"<id>": {"principal": "user/admin", "sha256": "<64 hex>", "created": "<ISO-8601>",
                              "expires": "<ISO-8601>"}}}
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from coffer.core import errors

TOKEN_PREFIX = "cfr"
FILE_VERSION = 1
_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
PRINCIPAL_RE = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}(/[A-Za-z0-9+=,.@_-]{1,64}){0,4}$")

INVALID_TOKEN_MESSAGE = "The security token included in the request is invalid."
EXPIRED_CODE = "ExpiredTokenException"
EXPIRED_MESSAGE = (
    "The security token included in the request is expired. Ask an administrator for a new one "
    "(`coffer admin rotate-credential --principal <principal>`)."
)

#: Compared against when the id is unknown, so a miss costs the same hash-and-compare as a hit.
_DUMMY_HASH = hashlib.sha256(b"coffer: no such credential").hexdigest()


@dataclass(frozen=True, slots=True)
class Credential:
    id: str
    principal: str
    sha256: str
    created: str
    #: When the credential stops working (UTC); None: never.
    expires: dt.datetime | None = None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh ``(id, token)``."""
    cred_id = secrets.token_hex(8)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    return cred_id, f"{TOKEN_PREFIX}_{cred_id}_{secret}"


def parse_token(token: str) -> tuple[str, str] | None:
    """Split a token into ``(id, secret)``; None when it does not have the token shape."""
    prefix, sep, rest = token.partition("_")
    if prefix != TOKEN_PREFIX or not sep:
        return None
    cred_id, sep, secret = rest.partition("_")
    if not sep or not _ID_RE.match(cred_id) or not _SECRET_RE.match(secret):
        return None
    return cred_id, secret


def verify_token(credentials: Mapping[str, Credential], token: str, *, now: dt.datetime | None = None) -> str:
    """Return the principal the token authenticates, or raise ``errors.Unauthenticated`` (with
    ``ExpiredTokenException`` for a right token past its expiry, ``now`` being the current time by
    default). The hash comparison is constant-time, and an unknown id still pays for one comparison."""
    parsed = parse_token(token)
    cred = credentials.get(parsed[0]) if parsed is not None else None
    expected = cred.sha256 if cred is not None else _DUMMY_HASH
    matches = hmac.compare_digest(hash_token(token).encode("ascii"), expected.encode("ascii"))
    if cred is None or not matches:
        raise errors.Unauthenticated(INVALID_TOKEN_MESSAGE)
    if cred.expires is not None and (now or dt.datetime.now(dt.UTC)) >= cred.expires:
        raise errors.Unauthenticated(EXPIRED_MESSAGE, code=EXPIRED_CODE)
    return cred.principal


def _parse_expiry(value: object) -> dt.datetime | None:
    """An ISO-8601 instant (UTC when it names no zone); None for a missing value."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("not a string")
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _decode(raw: bytes, path: Path) -> dict[str, Credential]:
    try:
        doc = json.loads(raw) if raw.strip() else {"version": FILE_VERSION, "credentials": {}}
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("version") != FILE_VERSION:
        raise ValueError(f'{path}: expected a JSON object with "version": {FILE_VERSION}')
    entries = doc.get("credentials")
    if not isinstance(entries, dict):
        raise ValueError(f'{path}: "credentials" must be an object of id -> entry')
    out: dict[str, Credential] = {}
    for cred_id, entry in entries.items():
        if (
            not _ID_RE.match(cred_id)
            or not isinstance(entry, dict)
            or not isinstance(entry.get("principal"), str)
            or not isinstance(entry.get("sha256"), str)
            or not _HASH_RE.match(entry["sha256"])
        ):
            raise ValueError(f"{path}: credential {cred_id!r} is malformed")
        try:
            expires = _parse_expiry(entry.get("expires"))
        except ValueError:
            raise ValueError(f"{path}: credential {cred_id!r} has a malformed expiry") from None
        out[cred_id] = Credential(
            id=cred_id,
            principal=entry["principal"],
            sha256=entry["sha256"],
            created=str(entry.get("created", "")),
            expires=expires,
        )
    return out


def read_credentials(path: Path) -> dict[str, Credential]:
    """All credentials in the file (an empty mapping when the file does not exist). Raises ValueError for
    a file that is not a valid credentials file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    return _decode(raw, path)


def _entry(c: Credential) -> dict[str, str]:
    entry = {"principal": c.principal, "sha256": c.sha256, "created": c.created}
    if c.expires is not None:
        entry["expires"] = c.expires.isoformat()
    return entry


def _write(path: Path, credentials: Mapping[str, Credential]) -> None:
    doc = {
        "version": FILE_VERSION,
        "credentials": {c.id: _entry(c) for c in credentials.values()},
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialize writers (two ``create-credential`` runs must not lose one another's entry)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _check_principal(principal: str) -> None:
    if not PRINCIPAL_RE.match(principal):
        raise errors.InvalidParameter(
            f"Invalid principal {principal!r}: use a name like 'user/admin' "
            "(letters, digits and +=,.@_- in up to five '/'-separated parts)."
        )


def _add(current: dict[str, Credential], principal: str, expires: dt.datetime | None) -> str:
    cred_id, token = new_token()
    while cred_id in current:  # pragma: no cover - 64 random bits
        cred_id, token = new_token()
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    current[cred_id] = Credential(
        id=cred_id, principal=principal, sha256=hash_token(token), created=created, expires=expires
    )
    return token


def create_credential(path: Path, *, principal: str, expires: dt.datetime | None = None) -> str:
    """Append a credential for ``principal`` (expiring at ``expires``, if given) to the file (created 0600 if
    missing) and return the token. The token is not stored anywhere: show it to the user once."""
    _check_principal(principal)
    with _locked(path):
        current = read_credentials(path)
        token = _add(current, principal, expires)
        _write(path, current)
    return token


def rotate_credential(path: Path, *, principal: str, expires: dt.datetime | None = None) -> tuple[str, int]:
    """Replace every credential of ``principal`` by one new credential (expiring at ``expires``, if given):
    return its token and how many old credentials were removed. ``errors.NotFound`` when the principal has
    no credential (create one instead)."""
    _check_principal(principal)
    with _locked(path):
        current = read_credentials(path)
        old = [c.id for c in current.values() if c.principal == principal]
        if not old:
            raise errors.NotFound(f"No credential of {principal} in {path}.")
        for cred_id in old:
            del current[cred_id]
        token = _add(current, principal, expires)
        _write(path, current)
    return token, len(old)


def revoke_credential(path: Path, *, credential_id: str) -> bool:
    """Remove one credential; True when it existed."""
    with _locked(path):
        current = read_credentials(path)
        if current.pop(credential_id, None) is None:
            return False
        _write(path, current)
    return True

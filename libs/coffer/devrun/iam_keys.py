"""The access keys a deployment starts with (``make run``, ``deployinit``).

* The root account admin's access key: generated once; its secret lives only in the user's 0600 profile
  (``access_key_id`` / ``secret_access_key``), reused on every restart while the profile has it.
* The rotation service's credentials: a session of role ``coffer-rotation`` (access key, secret, session
  token), kept in a 0600 file of the deployment's home and renewed when it is within a day of expiring.
  (Until STS AssumeRole is served, the session is issued here directly, with a 30-day lifetime.)
* The bootstrap keys file (0600, ``COFFER_BOOTSTRAP_KEYS_FILE``): the signing keys (never the secrets) of
  both, which the store inserts at start when absent.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from coffer.client.credentials import Credentials
from coffer.crypto.access_keys import derive_signing_key, new_access_key_id, new_secret_access_key
from coffer.devrun.processes import write_private
from coffer.store.iam_bootstrap import ADMIN_USER, ROTATION_NAME, BootstrapKey, bootstrap_entry, session_key

BOOTSTRAP_FILE_NAME = "iam-bootstrap.json"
ROTATION_FILE_NAME = "rotation-credentials.json"
ROTATION_SESSION_LIFETIME = dt.timedelta(days=30)
RENEW_BEFORE = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class RotationSession:
    credentials: Credentials
    key: BootstrapKey


def known_admin(profile_path: Path) -> Credentials | None:
    """The admin key a profile already holds (None when there is none)."""
    try:
        doc = json.loads(profile_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    akid = doc.get("access_key_id") if isinstance(doc, dict) else None
    secret = doc.get("secret_access_key") if isinstance(doc, dict) else None
    if isinstance(akid, str) and isinstance(secret, str) and akid.startswith("AKIA") and secret:
        return Credentials(akid, secret)
    return None


def ensure_admin(profile_path: Path) -> Credentials:
    return known_admin(profile_path) or Credentials(new_access_key_id(), new_secret_access_key())


def ensure_rotation_session(path: Path, *, now: dt.datetime | None = None) -> RotationSession:
    """The rotation service's session credentials, reused from ``path`` unless close to expiring."""
    moment = now or dt.datetime.now(dt.UTC)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        creds = Credentials(doc["access_key_id"], doc["secret_access_key"], doc["session_token"])
        expires = dt.datetime.fromisoformat(doc["expires"])
        if expires - moment > RENEW_BEFORE:
            from coffer.crypto.access_keys import token_digest

            key = BootstrapKey(
                access_key_id=creds.access_key_id,
                signing_key=creds.signing_key,
                role=ROTATION_NAME,
                session_name=ROTATION_NAME,
                token_sha256=token_digest(creds.session_token or ""),
                expires=expires,
            )
            return RotationSession(creds, key)
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        pass
    key, (akid, secret, token) = session_key(ROTATION_NAME, ROTATION_NAME, lifetime=ROTATION_SESSION_LIFETIME)
    assert key.expires is not None
    write_private(
        path,
        json.dumps(
            {
                "access_key_id": akid,
                "secret_access_key": secret,
                "session_token": token,
                "expires": key.expires.isoformat(),
            }
        )
        + "\n",
    )
    return RotationSession(Credentials(akid, secret, token), key)


def write_bootstrap(path: Path, admin: Credentials, rotation: RotationSession | None) -> None:
    """The bootstrap keys file: the admin's signing key and the rotation session's."""
    keys = [
        bootstrap_entry(
            BootstrapKey(
                access_key_id=admin.access_key_id,
                signing_key=derive_signing_key(admin.secret_access_key),
                user=ADMIN_USER,
            )
        )
    ]
    if rotation is not None:
        keys.append(bootstrap_entry(rotation.key))
    write_private(path, json.dumps({"keys": keys}) + "\n")


def rotation_env(creds: Credentials) -> dict[str, str]:
    return {
        "COFFER_ROTATION_ACCESS_KEY_ID": creds.access_key_id,
        "COFFER_ROTATION_SECRET_ACCESS_KEY": creds.secret_access_key,
        "COFFER_ROTATION_SESSION_TOKEN": creds.session_token or "",
    }

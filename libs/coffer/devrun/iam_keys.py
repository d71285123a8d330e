"""The access keys a deployment starts with (``make run``, ``deployinit``).

* The root account admin's access key: generated once; its secret lives only in the user's 0600 profile
  (``access_key_id`` / ``secret_access_key``), reused on every restart while the profile has it.
* The rotation service's access key: a long-term key of IAM user ``coffer-rotation`` (whose only permission
  is ``sts:AssumeRole`` on role ``coffer-rotation``), generated once and kept in a 0600 file of the
  deployment's home (``rotation-credentials.json``: ``access_key_id`` / ``secret_access_key``). The rotation
  service assumes the role with it through the gateway for short sessions; no session is issued here.
* The bootstrap keys file (0600, ``COFFER_BOOTSTRAP_KEYS_FILE``): the signing keys (never the secrets) of
  both, which the store inserts at start when absent, and the paths of the two files above, from which the
  store reads each secret to seal it into the key's row (AWS SigV4 needs it; no third plaintext copy).
"""

from __future__ import annotations

import json
from pathlib import Path

from coffer.client.credentials import Credentials
from coffer.crypto.access_keys import derive_signing_key, new_access_key_id, new_secret_access_key
from coffer.devrun.processes import write_private
from coffer.store.iam_bootstrap import ADMIN_USER, ROTATION_NAME, BootstrapKey, bootstrap_entry

BOOTSTRAP_FILE_NAME = "iam-bootstrap.json"
ROTATION_FILE_NAME = "rotation-credentials.json"


def known_admin(profile_path: Path) -> Credentials | None:
    """The admin key a profile already holds (None when there is none)."""
    return _long_term_key(profile_path)


def _long_term_key(path: Path) -> Credentials | None:
    """The user access key (``AKIA…``) a JSON file holds (None when there is none)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    akid = doc.get("access_key_id") if isinstance(doc, dict) else None
    secret = doc.get("secret_access_key") if isinstance(doc, dict) else None
    if isinstance(akid, str) and isinstance(secret, str) and akid.startswith("AKIA") and secret:
        return Credentials(akid, secret)
    return None


def ensure_admin(profile_path: Path) -> Credentials:
    return known_admin(profile_path) or Credentials(new_access_key_id(), new_secret_access_key())


def ensure_rotation_key(path: Path) -> Credentials:
    """IAM user ``coffer-rotation``'s access key, reused from ``path`` (0600), else generated and written
    there. (A file of an older release holding a role session, ``ASIA…``, is replaced.)"""
    creds = _long_term_key(path)
    if creds is None:
        creds = Credentials(new_access_key_id(), new_secret_access_key())
        write_private(
            path,
            json.dumps({"access_key_id": creds.access_key_id, "secret_access_key": creds.secret_access_key})
            + "\n",
        )
    return creds


def write_bootstrap(
    path: Path,
    admin: Credentials,
    rotation: Credentials | None,
    *,
    admin_file: Path | None = None,
    rotation_file: Path | None = None,
) -> None:
    """The bootstrap keys file: the signing keys of the admin's access key and of user coffer-rotation's,
    with the files that hold their secrets (the admin's profile, which may be written after the store
    starts: the store keeps looking)."""
    keys = [
        bootstrap_entry(
            BootstrapKey(
                access_key_id=admin.access_key_id,
                signing_key=derive_signing_key(admin.secret_access_key),
                user=ADMIN_USER,
                credentials_file=str(admin_file.resolve()) if admin_file is not None else None,
            )
        )
    ]
    if rotation is not None:
        keys.append(
            bootstrap_entry(
                BootstrapKey(
                    access_key_id=rotation.access_key_id,
                    signing_key=derive_signing_key(rotation.secret_access_key),
                    user=ROTATION_NAME,
                    credentials_file=str(rotation_file.resolve()) if rotation_file is not None else None,
                )
            )
        )
    write_private(path, json.dumps({"keys": keys}) + "\n")

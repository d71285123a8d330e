"""``python -m coffer.deployinit``: the one-shot job that prepares a container deployment before the services
start (deploy/compose.yaml runs it; on Kubernetes it provisions the database roles only, cert-manager issues
the certificates).

``--pki`` fills the state directory (``--state``, a volume only this job and the services mount)::

    issuing/             CA key and certificate, every identity's key: this job's only, never a service's
    pki/<service>/       ca.crt and that service's own files (coffer.pki.install_service_dir): each service's
                         COFFER_PKI_DIR
    operator/            ca.crt, operator.crt/.key and profile.json (the root admin's access key, 0600):
                         what `coffer` needs from outside
    kms/root.key         the KMS root key (32 random bytes, 0600)
    store/iam-bootstrap.json   the signing keys (never the secrets) of the admin's access key and of IAM
                         user coffer-rotation's: the store's COFFER_BOOTSTRAP_KEYS_FILE
    rotation/rotation-credentials.json   the rotation service's long-term access key (IAM user
                         coffer-rotation, which may only assume role coffer-rotation: the service's
                         COFFER_ROTATION_CREDENTIALS_FILE)

Everything already there is kept (a second run changes nothing but reissues certificates of an older PKI).

``--roles`` provisions the kms and store database roles (``coffer.dbroles.provision``) as the administrator
``COFFER_ADMIN_DATABASE_URL``, with the passwords ``COFFER_KMS_DB_PASSWORD`` and ``COFFER_STORE_DB_PASSWORD``
(from the environment, never the command line; the services' ``COFFER_DATABASE_URL`` log in as
``<database>_kms`` and ``<database>_store`` with them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from coffer import dbroles
from coffer.devrun import iam_keys
from coffer.devrun.processes import write_private
from coffer.pki import ensure_pki, install_service_dir
from coffer.rootkey_file import ensure_root_key
from coffer.settings import SERVICES

ADMIN_URL_VAR = "COFFER_ADMIN_DATABASE_URL"
PASSWORD_VARS: Mapping[str, str] = {
    service: f"COFFER_{service.upper()}_DB_PASSWORD" for service in dbroles.SCHEMAS
}


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def init_pki(state: Path) -> None:
    """Create (or complete) the state directory's PKI, root key and credentials (see the module doc)."""
    _private_dir(state)
    issuing = state / "issuing"
    ensure_pki(issuing)
    for service in SERVICES:
        install_service_dir(issuing, _private_dir(state / "pki") / service, service)
    operator = _private_dir(state / "operator")
    for name in ("ca.crt", "operator.crt", "operator.key"):
        write_private(operator / name, (issuing / name).read_text(encoding="utf-8"))
    ensure_root_key(_private_dir(state / "kms") / "root.key")
    profile = operator / "profile.json"
    admin = iam_keys.ensure_admin(profile)
    write_private(
        profile,
        json.dumps(
            {
                "ca_file": "ca.crt",
                "access_key_id": admin.access_key_id,
                "secret_access_key": admin.secret_access_key,
                "operator_cert": "operator.crt",
                "operator_key": "operator.key",
            },
            indent=2,
        )
        + "\n",
    )
    rotation = iam_keys.ensure_rotation_key(_private_dir(state / "rotation") / iam_keys.ROTATION_FILE_NAME)
    # No credentials_file: the store's container sees only state/store, not the operator's profile or the
    # rotation key (and no plaintext copy is made for it), so these keys get no stored secret (README).
    iam_keys.write_bootstrap(_private_dir(state / "store") / iam_keys.BOOTSTRAP_FILE_NAME, admin, rotation)


def role_passwords(env: Mapping[str, str]) -> dict[str, str]:
    """The database role passwords from the environment; every one is required (services are configured with
    them)."""
    missing = [var for var in PASSWORD_VARS.values() if not env.get(var)]
    if missing:
        raise SystemExit(f"deployinit --roles: set {', '.join(missing)}")
    return {service: env[var] for service, var in PASSWORD_VARS.items()}


async def init_roles(admin_url: str, passwords: Mapping[str, str]) -> None:
    await dbroles.provision(admin_url, passwords=passwords)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coffer.deployinit", description=__doc__.split("\n")[0])
    parser.add_argument("--state", type=Path, default=Path("/var/lib/coffer/state"))
    parser.add_argument("--pki", action="store_true", help="PKI, root key and credentials in --state")
    parser.add_argument("--roles", action="store_true", help="database roles (COFFER_ADMIN_DATABASE_URL)")
    args = parser.parse_args(argv)
    e = os.environ if env is None else env
    if not (args.pki or args.roles):
        parser.error("nothing to do: give --pki, --roles or both")
    if args.pki:
        init_pki(args.state)
        print(f"deployinit: PKI, root key and credentials ready in {args.state}", flush=True)
    if args.roles:
        admin_url = e.get(ADMIN_URL_VAR, "")
        if not admin_url:
            raise SystemExit(f"deployinit --roles: set {ADMIN_URL_VAR}")
        asyncio.run(init_roles(admin_url, role_passwords(e)))
        print("deployinit: database roles ready", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

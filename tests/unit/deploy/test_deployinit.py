"""coffer.deployinit --pki: the state directory a container deployment's services mount."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from coffer import deployinit, pki
from coffer.crypto.access_keys import derive_signing_key
from coffer.settings import SERVICES


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_pki_gives_each_service_the_ca_and_only_its_own_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert deployinit.main(["--state", str(state), "--pki"], env={}) == 0
    for service in SERVICES:
        directory = state / "pki" / service
        assert {p.name for p in directory.iterdir()} == {"ca.crt", *pki.service_files(service)}
        assert _mode(directory) == 0o700
        assert pki.is_current(directory / f"{service}.crt", service)
    assert (state / "kms" / "root.key").stat().st_size == 32
    assert _mode(state / "kms" / "root.key") == 0o600
    assert {p.name for p in (state / "operator").iterdir()} == {
        "ca.crt",
        "operator.crt",
        "operator.key",
        "profile.json",
    }
    profile = json.loads((state / "operator" / "profile.json").read_text())
    rotation = json.loads((state / "rotation" / "rotation-credentials.json").read_text())
    bootstrap = json.loads((state / "store" / "iam-bootstrap.json").read_text())["keys"]
    for path in ("operator/profile.json", "rotation/rotation-credentials.json", "store/iam-bootstrap.json"):
        assert _mode(state / path) == 0o600
    # the store gets signing keys only, never a secret access key; the rotation service gets a long-term key
    # of user coffer-rotation (it assumes the role itself), no session
    admin_entry, rotation_entry = bootstrap
    assert admin_entry == {
        "access_key_id": profile["access_key_id"],
        "signing_key": derive_signing_key(profile["secret_access_key"]).hex(),
        "user": "admin",
    }
    assert set(rotation) == {"access_key_id", "secret_access_key"}
    assert rotation["access_key_id"].startswith("AKIA")
    assert rotation_entry == {
        "access_key_id": rotation["access_key_id"],
        "signing_key": derive_signing_key(rotation["secret_access_key"]).hex(),
        "user": "coffer-rotation",
    }
    text = (state / "store" / "iam-bootstrap.json").read_text()
    assert profile["secret_access_key"] not in text and rotation["secret_access_key"] not in text
    assert not any("ca.key" in str(p) for p in (state / "pki").rglob("*"))


def test_init_pki_twice_keeps_keys_and_tokens(tmp_path: Path) -> None:
    state = tmp_path / "state"
    deployinit.init_pki(state)
    kept = {p: p.read_bytes() for p in state.rglob("*") if p.is_file()}
    deployinit.init_pki(state)
    assert {p: p.read_bytes() for p in state.rglob("*") if p.is_file()} == kept


def test_roles_need_the_admin_url_and_every_password(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="COFFER_ADMIN_DATABASE_URL"):
        deployinit.main(["--roles"], env={})
    with pytest.raises(SystemExit, match="COFFER_STORE_DB_PASSWORD"):
        deployinit.main(
            ["--roles"], env={"COFFER_ADMIN_DATABASE_URL": "postgresql://x/y", "COFFER_KMS_DB_PASSWORD": "p"}
        )
    with pytest.raises(SystemExit):
        deployinit.main([], env={})

"""Privilege separation under ``make run``: each service process (read from ``/proc/<pid>/environ``) gets only
its own settings and its own PKI directory. The public gateway's environment holds no database or Redis
address; only the kms is told where the root key is; no service is pointed at the issuing PKI directory
(the CA key and every identity's key); each service's PKI directory holds the CA certificate and its own
certificate, key and signing material only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from coffer.pki import AUDIT_KEY, SIGNING_KEY, SIGNING_PUB
from coffer.settings import SERVICES

pytestmark = pytest.mark.e2e

OWN_FILES = {
    "gateway": {"ca.crt", "gateway.crt", "gateway.key", SIGNING_KEY},
    "store": {
        "ca.crt",
        "store.crt",
        "store.key",
        SIGNING_PUB,
        AUDIT_KEY,
        "replicator.local-1.crt",
        "replicator.local-1.key",
    },
    "kms": {"ca.crt", "kms.crt", "kms.key", SIGNING_PUB},
    "rotation": {"ca.crt", "rotation.crt", "rotation.key"},
}


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode().partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def test_each_service_process_gets_only_its_own_settings_and_files(e2e: Any) -> None:
    issuing = e2e.settings.pki_dir
    assert (issuing / "ca.key").exists()
    envs = {name: _environ(e2e.deployment.processes[name].proc.pid) for name in SERVICES}

    assert not {"COFFER_DATABASE_URL", "COFFER_REDIS_URL"} & set(envs["gateway"])
    assert [name for name, env in envs.items() if "COFFER_ROOT_KEY_FILE" in env] == ["kms"]
    for name, env in envs.items():
        pki = Path(env["COFFER_PKI_DIR"])
        assert pki != issuing and pki.resolve() != issuing.resolve(), name
        assert set(os.listdir(pki)) == OWN_FILES[name], name
        coffer_values = [value for key, value in env.items() if key.startswith("COFFER_")]
        assert not any(str(issuing) in value or "ca.key" in value for value in coffer_values), name
    # every service is SERVING with only these files
    assert set(e2e.deployment.health().values()) == {"SERVING"}

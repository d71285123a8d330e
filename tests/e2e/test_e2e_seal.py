"""The sealed KMS end to end, as ``COFFER_SEAL=shamir make run`` runs it: ``coffer operator init`` with 5
shares and threshold 3; after a restart of the kms process GetSecretValue is refused with the sealed error;
two shares leave it sealed; a corrupted share is named; the third good share unseals and the read works;
``coffer operator seal`` closes it again."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from coffer.crypto import shamir
from coffer.testing.shares import corrupt_share
from coffer.testing.wait import eventually_sync

from .conftest import CLI_SERVICE_ERROR

pytestmark = pytest.mark.e2e

SM = "secretsmanager"
SEALED = "The KMS is sealed: unseal it with `coffer operator unseal` ({k} of 3 shares given)."


def sealed_error(e2e: Any) -> str:
    """The error GetSecretValue answers now (or "" when it succeeds)."""
    result = e2e.cli(SM, "get-secret-value", "--secret-id", "db/sealed")
    if result.returncode == 0:
        return ""
    assert result.returncode == CLI_SERVICE_ERROR, result.stderr
    return str(result.stderr.strip())


def test_init_restart_unseal_and_seal_through_make_runs_deployment(e2e_factory: Any) -> None:
    e2e = e2e_factory(COFFER_SEAL="shamir")
    init = e2e.cli_json("operator", "init", "--key-shares", "5", "--key-threshold", "3")
    shares: list[str] = init["Shares"]
    assert len(shares) == 5 and init["Status"]["Mode"] == "shamir" and not init["Status"].get("Sealed")
    e2e.cli_json(SM, "create-secret", "--name", "db/sealed", "--secret-string", "sealed-canary")
    assert e2e.cli_json(SM, "get-secret-value", "--secret-id", "db/sealed")["SecretString"] == "sealed-canary"

    # a restart of the kms process: it comes back sealed
    e2e.deployment.kill_service("kms", signal.SIGTERM)
    e2e.deployment.start_service("kms")
    refused = eventually_sync(
        lambda: sealed_error(e2e),
        timeout=20,
        until=lambda text: "KMSSealedException" in text,
        message="GetSecretValue refused as sealed after the restart",
    )
    operation = "An error occurred (KMSSealedException) when calling the GetSecretValue operation: "
    assert refused == operation + SEALED.format(k=0)
    # describing and listing do not need the root key
    assert e2e.cli_json(SM, "describe-secret", "--secret-id", "db/sealed")["Name"] == "db/sealed"

    for given, share in enumerate(shares[:2], start=1):
        status = e2e.cli_json("operator", "unseal", share)["Status"]
        assert status["Sealed"] and status["Progress"] == given
    assert SEALED.format(k=2) in sealed_error(e2e)

    bad = corrupt_share(shares[2])
    result = e2e.cli("operator", "unseal", bad)
    assert result.returncode == CLI_SERVICE_ERROR
    assert "InvalidUnsealShareException" in result.stderr and shamir.label(bad) in result.stderr
    assert e2e.cli_json("operator", "status")["Status"]["Progress"] == 2  # the bad share did not count

    assert not e2e.cli_json("operator", "unseal", shares[2])["Status"].get("Sealed")
    assert e2e.cli_json(SM, "get-secret-value", "--secret-id", "db/sealed")["SecretString"] == "sealed-canary"

    assert e2e.cli_json("operator", "seal")["Status"]["Sealed"]
    eventually_sync(
        lambda: sealed_error(e2e),
        timeout=10,
        until=lambda text: SEALED.format(k=0) in text,
        message="GetSecretValue refused again once sealed",
    )
    assert "sealed-canary" not in json.dumps(init)

"""A secret's whole life through the real ``coffer`` command against a running deployment: every answer is
checked in AWS's shape (field names, labels as AWS moves them, VersionIdsToStages, deletion dates, error
text)."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import pytest

from coffer.testing.wait import eventually_sync


def epoch(printed: str) -> float:
    """The CLI prints timestamps as the AWS CLI does (ISO 8601 with the zone's offset)."""
    when = dt.datetime.fromisoformat(printed)
    assert when.tzinfo is not None, printed
    return when.timestamp()


pytestmark = pytest.mark.e2e

SM = "secretsmanager"
MARKED_FOR_DELETION = "You can't perform this operation on the secret because it was marked for deletion."


def stages(describe: dict[str, Any]) -> dict[str, list[str]]:
    return {vid: sorted(labels) for vid, labels in describe.get("VersionIdsToStages", {}).items()}


def aws_error(result: Any, code: str, operation: str) -> str:
    """Assert the AWS-CLI-shaped failure and return the message after the error header."""
    assert result.returncode == 254, (result.returncode, result.stdout, result.stderr)
    prefix = f"An error occurred ({code}) when calling the {operation} operation: "
    assert prefix in result.stderr, result.stderr
    return str(result.stderr.split(prefix, 1)[1].strip())


def test_secret_life_through_the_cli(e2e: Any) -> None:
    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    name = f"{prefix}/walk"

    created = e2e.cli_json(
        SM, "create-secret", "--name", name, "--secret-string", "value-one", "--tags", "Key=team,Value=blue"
    )
    assert created["Name"] == name
    assert created["ARN"].startswith(
        f"arn:aws:secretsmanager:{e2e.settings.region}:000000000000:secret:{name}-"
    )
    assert (
        len(created["ARN"])
        == len(f"arn:aws:secretsmanager:{e2e.settings.region}:000000000000:secret:") + len(name) + 7
    )
    v1 = created["VersionId"]
    arn = created["ARN"]

    put2 = e2e.cli_json(SM, "put-secret-value", "--secret-id", name, "--secret-string", "value-two")
    v2 = put2["VersionId"]
    assert put2["ARN"] == arn and put2["Name"] == name
    assert put2["VersionStages"] == ["AWSCURRENT"]
    assert stages(e2e.cli_json(SM, "describe-secret", "--secret-id", name)) == {
        v1: ["AWSPREVIOUS"],
        v2: ["AWSCURRENT"],
    }

    put3 = e2e.cli_json(SM, "put-secret-value", "--secret-id", arn, "--secret-string", "value-three")
    v3 = put3["VersionId"]
    assert len({v1, v2, v3}) == 3
    # v1 lost AWSPREVIOUS, so it is deprecated: a version without labels is not listed by Describe.
    assert stages(e2e.cli_json(SM, "describe-secret", "--secret-id", name)) == {
        v2: ["AWSPREVIOUS"],
        v3: ["AWSCURRENT"],
    }

    current = e2e.cli_json(SM, "get-secret-value", "--secret-id", name)
    assert (current["SecretString"], current["VersionId"], current["VersionStages"]) == (
        "value-three",
        v3,
        ["AWSCURRENT"],
    )
    assert current["ARN"] == arn and epoch(current["CreatedDate"]) > 0
    assert "SecretBinary" not in current
    previous = e2e.cli_json(SM, "get-secret-value", "--secret-id", name, "--version-stage", "AWSPREVIOUS")
    assert (previous["SecretString"], previous["VersionId"]) == ("value-two", v2)
    by_id = e2e.cli_json(SM, "get-secret-value", "--secret-id", name, "--version-id", v1)
    assert by_id["SecretString"] == "value-one"
    assert by_id.get("VersionStages", []) == []

    # A custom label: attach to the deprecated v1, then it may only move with RemoveFromVersionId.
    e2e.cli_json(
        SM,
        "update-secret-version-stage",
        "--secret-id",
        name,
        "--version-stage",
        "E2E",
        "--move-to-version-id",
        v1,
    )
    assert stages(e2e.cli_json(SM, "describe-secret", "--secret-id", name)) == {
        v1: ["E2E"],
        v2: ["AWSPREVIOUS"],
        v3: ["AWSCURRENT"],
    }
    refused = e2e.cli(
        SM,
        "update-secret-version-stage",
        "--secret-id",
        name,
        "--version-stage",
        "E2E",
        "--move-to-version-id",
        v2,
    )
    assert aws_error(refused, "InvalidParameterException", "UpdateSecretVersionStage") == (
        "The parameter RemoveFromVersionId can't be empty. Staging label E2E is currently attached to "
        f"version {v1}, so you must explicitly reference that version in RemoveFromVersionId."
    )
    moved = e2e.cli_json(
        SM,
        "update-secret-version-stage",
        "--secret-id",
        name,
        "--version-stage",
        "E2E",
        "--move-to-version-id",
        v2,
        "--remove-from-version-id",
        v1,
    )
    assert moved == {"ARN": arn, "Name": name}
    assert stages(e2e.cli_json(SM, "describe-secret", "--secret-id", name)) == {
        v2: ["AWSPREVIOUS", "E2E"],
        v3: ["AWSCURRENT"],
    }
    versions = e2e.cli_json(SM, "list-secret-version-ids", "--secret-id", name)
    assert [v["VersionId"] for v in versions["Versions"]] == [v2, v3]  # oldest first, deprecated v1 hidden
    all_versions = e2e.cli_json(SM, "list-secret-version-ids", "--secret-id", name, "--include-deprecated")
    assert [v["VersionId"] for v in all_versions["Versions"]] == [v1, v2, v3]
    assert "VersionStages" not in all_versions["Versions"][0]
    assert all_versions["Versions"][0]["KmsKeyIds"] == ["DefaultEncryptionKey"]

    # Listing with filters: name prefix, tag value, AND across filters, negation.
    other = e2e.cli_json(
        SM,
        "create-secret",
        "--name",
        f"{prefix}/other",
        "--secret-string",
        "x",
        "--tags",
        "Key=team,Value=red",
    )

    def listed(*filters: str, planned: bool = False) -> list[str]:
        args = [SM, "list-secrets", "--filters", *filters]
        if planned:
            args.append("--include-planned-deletion")
        return sorted(entry["Name"] for entry in e2e.cli_json(*args)["SecretList"])

    assert listed(f"Key=name,Values={prefix}/") == sorted([name, other["Name"]])
    assert listed(f"Key=name,Values={prefix}/w") == [name]
    assert listed(f"Key=name,Values={prefix}/", "Key=tag-value,Values=blu") == [name]
    assert listed(f"Key=name,Values={prefix}/", "Key=tag-value,Values=!blue") == [other["Name"]]
    entry = next(
        e for e in e2e.cli_json(SM, "list-secrets", "--filters", f"Key=name,Values={name}")["SecretList"]
    )
    assert {vid: sorted(s) for vid, s in entry["SecretVersionsToStages"].items()} == {
        v2: ["AWSPREVIOUS", "E2E"],
        v3: ["AWSCURRENT"],
    }
    assert "VersionIdsToStages" not in entry
    assert entry["Tags"] == [{"Key": "team", "Value": "blue"}]

    # Delete with a recovery window: DeletionDate = now + window; reads refused; hidden from plain lists.
    before = time.time()
    deleted = e2e.cli_json(SM, "delete-secret", "--secret-id", name, "--recovery-window-in-days", "7")
    after = time.time()
    assert deleted["ARN"] == arn and deleted["Name"] == name
    assert before + 7 * 86400 - 5 <= epoch(deleted["DeletionDate"]) <= after + 7 * 86400 + 5
    refused_get = e2e.cli(SM, "get-secret-value", "--secret-id", name)
    assert aws_error(refused_get, "InvalidRequestException", "GetSecretValue") == MARKED_FOR_DELETION
    described = e2e.cli_json(SM, "describe-secret", "--secret-id", name)
    assert before - 5 <= epoch(described["DeletedDate"]) <= after + 5
    assert listed(f"Key=name,Values={prefix}/") == [other["Name"]]
    assert listed(f"Key=name,Values={prefix}/", planned=True) == sorted([name, other["Name"]])

    # Restore: everything as before.
    assert e2e.cli_json(SM, "restore-secret", "--secret-id", name) == {"ARN": arn, "Name": name}
    assert "DeletedDate" not in e2e.cli_json(SM, "describe-secret", "--secret-id", name)
    assert e2e.cli_json(SM, "get-secret-value", "--secret-id", name)["SecretString"] == "value-three"

    # Force delete: gone without a window (the purge runs in the background, every second here).
    forced = e2e.cli_json(SM, "delete-secret", "--secret-id", name, "--force-delete-without-recovery")
    assert forced["ARN"] == arn and epoch(forced["DeletionDate"]) <= time.time() + 5
    gone = eventually_sync(
        lambda: e2e.cli(SM, "describe-secret", "--secret-id", name),
        until=lambda result: result.returncode != 0,
        timeout=20,
        interval=0.5,
        message="the forced delete to be purged",
    )
    assert aws_error(gone, "ResourceNotFoundException", "DescribeSecret") == (
        "Secrets Manager can't find the specified secret."
    )
    failed_get = e2e.cli(SM, "get-secret-value", "--secret-id", name)
    assert aws_error(failed_get, "ResourceNotFoundException", "GetSecretValue")
    # The other secret was not touched.
    assert (
        json.loads(e2e.cli(SM, "get-secret-value", "--secret-id", other["ARN"]).stdout)["SecretString"] == "x"
    )

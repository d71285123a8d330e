"""The AWS-protocol endpoint of a deployment started like ``make run`` (all services as processes): the
profile names it, ``coffer aws-env`` prints the exports, and the real AWS CLI (``awscli`` from PyPI,
unmodified) works in a shell that evaluated them — as the deployment's admin, in its region."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from coffer.testing.wait import eventually_sync

from .conftest import E2E, coffer_command

AWS_CLI = Path(sys.executable).parent / "aws"


def _shell(e2e: E2E, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in bash after ``eval "$(coffer aws-env)"``, with no AWS or Coffer settings inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COFFER_", "AWS_"))}
    env["COFFER_PROFILE"] = str(e2e.profile_path)
    env["HOME"] = str(e2e.home)  # no ~/.aws of the machine's
    coffer = " ".join(shlex.quote(part) for part in coffer_command())
    return subprocess.run(
        ["bash", "-c", f'set -e; eval "$({coffer} aws-env)"; {script}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_aws_cli_works_after_eval_aws_env(e2e: E2E) -> None:
    profile = json.loads(e2e.profile_path.read_text())
    assert profile["aws_endpoint_url"] == e2e.aws_endpoint_url

    aws = shlex.quote(str(AWS_CLI))

    def identity() -> subprocess.CompletedProcess[str]:
        # The admin's bootstrap key gets its secret sealed once the kms answers: moments after start.
        result = _shell(e2e, f"{aws} sts get-caller-identity")
        assert result.returncode == 0, result.stderr
        return result

    me = json.loads(eventually_sync(identity, timeout=30, interval=0.5).stdout)
    assert me["Arn"].endswith(":user/admin") and me["Account"] == e2e.settings.account_id

    created = _shell(
        e2e,
        f"{aws} secretsmanager create-secret --name e2e/aws-cli --secret-string from-the-aws-cli >/dev/null; "
        f"{aws} secretsmanager get-secret-value --secret-id e2e/aws-cli",
    )
    assert created.returncode == 0, created.stderr
    got = json.loads(created.stdout)
    assert got["SecretString"] == "from-the-aws-cli" and f":{e2e.settings.region}:" in got["ARN"]
    # ... and the same secret through Coffer's own CLI.
    assert (
        e2e.cli_json("secretsmanager", "get-secret-value", "--secret-id", "e2e/aws-cli")["SecretString"]
        == "from-the-aws-cli"
    )

    missing = _shell(e2e, f"{aws} secretsmanager describe-secret --secret-id e2e/none")
    assert missing.returncode != 0
    assert "An error occurred (ResourceNotFoundException) when calling the DescribeSecret operation" in (
        missing.stderr
    )

"""``coffer aws-env [--region R]``: the shell lines that point AWS's own clients (the AWS CLI, boto3, AWS's
caching library) at the running deployment's AWS-protocol endpoint as its admin::

    eval "$(coffer aws-env)"
    aws secretsmanager list-secrets

Everything comes from the profile ``make run`` writes (``aws_endpoint_url``, ``ca_file``, the admin's access
key, the region), for the region ``--region`` names (default: the profile's). Values are shell-quoted. The
lines hold the admin's secret access key: they are meant for ``eval``, not for a file or a log.
"""

from __future__ import annotations

import argparse
import shlex
from typing import TextIO

from coffer.client.profile import DEFAULT_REGION, ConfigurationError, Profile


def aws_env_lines(profile: Profile, region: str | None) -> list[str]:
    """The ``export`` lines for ``region`` of ``profile`` (ConfigurationError when the profile lacks the
    endpoint or the access key)."""
    name = region or profile.region or (DEFAULT_REGION if profile.regions else None)
    selected = profile.select_region(name) if name else profile
    where = (
        f"the profile {profile.path}" if profile.path else "the profile (none found: is `make run` running?)"
    )
    if not selected.aws_endpoint_url:
        raise ConfigurationError(
            f"{where} names no AWS-protocol endpoint (aws_endpoint_url) for region {name or '(default)'}: "
            "start Coffer with `make run` (COFFER_AWS_ADDR, on by default there)."
        )
    if not selected.access_key_id or not selected.secret_access_key:
        raise ConfigurationError(f"{where} has no access key for region {name or '(default)'}.")
    if selected.ca_file is None:
        raise ConfigurationError(f"{where} names no CA file for region {name or '(default)'}.")
    values = {
        "AWS_ENDPOINT_URL": selected.aws_endpoint_url,
        "AWS_CA_BUNDLE": str(selected.ca_file),
        "AWS_ACCESS_KEY_ID": selected.access_key_id,
        "AWS_SECRET_ACCESS_KEY": selected.secret_access_key,
        "AWS_DEFAULT_REGION": selected.region or name or DEFAULT_REGION,
    }
    lines = [f"export {key}={shlex.quote(value)}" for key, value in values.items()]
    if selected.session_token:
        lines.append(f"export AWS_SESSION_TOKEN={shlex.quote(selected.session_token)}")
    else:
        # A session token left in the shell would be sent with the admin's long-term key, and refused.
        lines.append("unset AWS_SESSION_TOKEN")
    return lines


def run(args: argparse.Namespace, profile: Profile, out: TextIO) -> int:
    for line in aws_env_lines(profile, args.region):
        print(line, file=out)
    return 0

"""``coffer aws-env``: the export lines for AWS's own clients, from the profile ``make run`` writes, per
region, shell-quoted, and a clear configuration error when the profile has no AWS endpoint."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

from coffer.cli.main import EXIT_CONFIG, main


def _profile(path: Path, *, regions: bool = True, aws: bool = True) -> Path:
    one = {
        "endpoint": "127.0.0.1:7443",
        "ca_file": "pki/ca.crt",
        "access_key_id": "AKIAAAAAAAAAAAAAAAAA",
        "secret_access_key": "s3cret/with'quote",
        "region": "local-1",
        "aws_endpoint_url": "https://127.0.0.1:7447" if aws else None,
    }
    doc: dict[str, object] = dict(one)
    if regions:
        two = {**one, "access_key_id": "AKIABBBBBBBBBBBBBBBB", "aws_endpoint_url": "https://127.0.0.1:7457"}
        two.pop("region")
        doc["regions"] = {"local-1": {k: v for k, v in one.items() if k != "region"}, "local-2": two}
    path.write_text(json.dumps(doc))
    return path


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), stdout=out, stderr=err), out.getvalue(), err.getvalue()


def _exports(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if words[0] == "export":
            key, _, value = words[1].partition("=")
            values[key] = value
    return values


def test_prints_the_admins_exports_for_the_default_region(tmp_path: Path) -> None:
    profile = _profile(tmp_path / "profile.json")
    code, out, _ = _run("aws-env", "--profile", str(profile))
    assert code == 0
    assert _exports(out) == {
        "AWS_ENDPOINT_URL": "https://127.0.0.1:7447",
        "AWS_CA_BUNDLE": str(tmp_path / "pki" / "ca.crt"),
        "AWS_ACCESS_KEY_ID": "AKIAAAAAAAAAAAAAAAAA",
        "AWS_SECRET_ACCESS_KEY": "s3cret/with'quote",
        "AWS_DEFAULT_REGION": "local-1",
    }
    assert "unset AWS_SESSION_TOKEN" in out.splitlines()


def test_region_selects_that_regions_endpoint_and_key(tmp_path: Path) -> None:
    profile = _profile(tmp_path / "profile.json")
    code, out, _ = _run("aws-env", "--region", "local-2", "--profile", str(profile))
    values = _exports(out)
    assert code == 0 and values["AWS_ENDPOINT_URL"] == "https://127.0.0.1:7457"
    assert values["AWS_ACCESS_KEY_ID"] == "AKIABBBBBBBBBBBBBBBB" and values["AWS_DEFAULT_REGION"] == "local-2"


def test_a_profile_without_the_aws_endpoint_is_a_configuration_error(tmp_path: Path) -> None:
    profile = _profile(tmp_path / "profile.json", regions=False, aws=False)
    code, out, err = _run("aws-env", "--profile", str(profile))
    assert code == EXIT_CONFIG and out == "" and "aws_endpoint_url" in err

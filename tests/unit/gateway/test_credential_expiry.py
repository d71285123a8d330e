"""Credentials expire and rotate; the ``make run`` banner never shows a token."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest

from coffer import credentials as creds
from coffer.cli.main import main
from coffer.core import errors
from coffer.devrun.cli import _banner
from coffer.devrun.deployment import Deployment


def test_an_expired_credential_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    now = dt.datetime.now(dt.UTC)
    token = creds.create_credential(path, principal="user/temp", expires=now + dt.timedelta(seconds=60))
    table = creds.read_credentials(path)
    assert creds.verify_token(table, token, now=now) == "user/temp"
    with pytest.raises(errors.Unauthenticated) as info:
        creds.verify_token(table, token, now=now + dt.timedelta(seconds=61))
    assert info.value.code == "ExpiredTokenException"
    assert "expired" in info.value.message and "rotate-credential" in info.value.message
    # A wrong token stays "invalid" (expiry says nothing about tokens that do not verify).
    with pytest.raises(errors.Unauthenticated) as wrong:
        creds.verify_token(table, token[:-1] + ("A" if token[-1] != "A" else "B"), now=now)
    assert wrong.value.code == "UnrecognizedClientException"


def test_rotation_replaces_every_credential_of_the_principal(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    old1 = creds.create_credential(path, principal="user/app")
    old2 = creds.create_credential(path, principal="user/app")
    other = creds.create_credential(path, principal="user/other")
    new, replaced = creds.rotate_credential(path, principal="user/app")
    assert replaced == 2
    table = creds.read_credentials(path)
    for old in (old1, old2):
        with pytest.raises(errors.Unauthenticated):
            creds.verify_token(table, old)
    assert creds.verify_token(table, new) == "user/app"
    assert creds.verify_token(table, other) == "user/other"
    with pytest.raises(errors.NotFound):
        creds.rotate_credential(path, principal="user/nobody")


def test_cli_create_with_expiry_rotate_and_list(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    out, err = io.StringIO(), io.StringIO()
    argv = ["admin", "create-credential", "--principal", "user/ci", "--expires-in", "3600"]
    assert main([*argv, "--credentials-file", str(path)], stdout=out, stderr=err) == 0, err.getvalue()
    first = out.getvalue().strip()
    (cred,) = creds.read_credentials(path).values()
    assert cred.expires is not None
    left = cred.expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=3500) < left <= dt.timedelta(seconds=3600)

    out, err = io.StringIO(), io.StringIO()
    argv = ["admin", "rotate-credential", "--principal", "user/ci", "--expires-at", "2999-01-01T00:00:00Z"]
    assert main([*argv, "--credentials-file", str(path)], stdout=out, stderr=err) == 0, err.getvalue()
    second = out.getvalue().strip()
    assert second != first and second.startswith("cfr_") and second not in err.getvalue()
    table = creds.read_credentials(path)
    assert creds.verify_token(table, second) == "user/ci"
    with pytest.raises(errors.Unauthenticated):
        creds.verify_token(table, first)

    out, err = io.StringIO(), io.StringIO()
    assert main(["admin", "list-credentials", "--credentials-file", str(path)], stdout=out, stderr=err) == 0
    (listed,) = json.loads(out.getvalue())["Credentials"]
    assert listed["ExpirationDate"].startswith("2999-01-01T00:00:00")

    for bad in (["--expires-in", "0"], ["--expires-at", "2001-01-01T00:00:00"], ["--expires-at", "soon"]):
        out, err = io.StringIO(), io.StringIO()
        argv = ["admin", "create-credential", "--principal", "user/x", *bad, "--credentials-file", str(path)]
        assert main(argv, stdout=out, stderr=err) == 252, bad
    out, err = io.StringIO(), io.StringIO()
    argv = ["admin", "rotate-credential", "--principal", "user/none", "--credentials-file", str(path)]
    assert main(argv, stdout=out, stderr=err) == 255 and "No credential of user/none" in err.getvalue()


def test_the_make_run_banner_shows_where_the_profile_is_not_the_token(tmp_path: Path) -> None:
    deployment = Deployment.in_home(tmp_path / "h")
    deployment.admin_token = creds.new_token()[1]
    text = "\n".join(_banner(deployment, wrote_user_profile=False))
    assert deployment.admin_token not in text and "cfr_" not in text
    assert str(deployment.profile_path) in text

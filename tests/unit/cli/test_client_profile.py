"""SDK configuration (profile search order, env overrides) and request building (token auto-fill)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client import _ops
from coffer.client.credentials import Credentials
from coffer.client.profile import ConfigurationError, load_profile, resolve_connection


def write_profile(path: Path, **doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_profile_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, cwd = tmp_path / "home", tmp_path / "work"
    user = write_profile(home / ".config" / "coffer" / "profile.json", endpoint="user:1", ca_file="ca.crt")
    env = {"HOME": str(home)}
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert load_profile(env=env).endpoint == "user:1"
    assert load_profile(env=env).ca_file == user.parent / "ca.crt"  # relative to the profile
    write_profile(cwd / ".coffer" / "profile.json", endpoint="local:2", ca_file="/abs/ca.crt")
    assert load_profile(env=env).endpoint == "local:2"
    explicit = write_profile(tmp_path / "p.json", endpoint="explicit:3", services={"kms": "127.0.0.1:9"})
    prof = load_profile(env={**env, "COFFER_PROFILE": str(explicit)})
    assert prof.endpoint == "explicit:3" and prof.services == {"kms": "127.0.0.1:9"}
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_profile(env={**env, "COFFER_PROFILE": str(tmp_path / "missing.json")})


def test_env_overrides_profile_and_arguments_override_env(tmp_path: Path) -> None:
    prof_path = write_profile(
        tmp_path / "p.json",
        endpoint="prof:1",
        ca_file=str(tmp_path / "ca"),
        access_key_id="AKIAPROFILEPROFILE22",
        secret_access_key="profile-secret",
        region="local-1",
    )
    profile_only = resolve_connection(env={"COFFER_PROFILE": str(prof_path)})
    assert profile_only.credentials == Credentials("AKIAPROFILEPROFILE22", "profile-secret")
    env = {
        "COFFER_PROFILE": str(prof_path),
        "COFFER_ACCESS_KEY_ID": "ASIAENVENVENVENVENV2",
        "COFFER_SECRET_ACCESS_KEY": "env-secret",
        "COFFER_SESSION_TOKEN": "env-token",
    }
    conn = resolve_connection(env=env)
    assert (conn.endpoint, conn.credentials, conn.region) == (
        "prof:1",
        Credentials("ASIAENVENVENVENVENV2", "env-secret", "env-token"),
        "local-1",
    )
    arg = Credentials("AKIAARGARGARGARGARG2", "arg-secret")
    conn = resolve_connection(env=env, endpoint="arg:2", credentials=arg)
    assert (conn.endpoint, conn.credentials) == ("arg:2", arg)
    with pytest.raises(ConfigurationError, match="COFFER_SECRET_ACCESS_KEY"):
        resolve_connection(env={"COFFER_PROFILE": str(prof_path), "COFFER_ACCESS_KEY_ID": "AKIAX"})


def test_missing_endpoint_or_ca_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./.coffer/profile.json here
    with pytest.raises(ConfigurationError, match="endpoint"):
        resolve_connection(env={"HOME": str(tmp_path)}, profile=load_profile(env={"HOME": str(tmp_path)}))
    with pytest.raises(ConfigurationError, match="CA file"):
        resolve_connection(env={"COFFER_ENDPOINT": "h:1", "HOME": str(tmp_path)})


def test_client_request_token_is_auto_filled_like_boto3() -> None:
    op = _ops.operation(_ops.SECRETS, "CreateSecret")
    built = _ops.build_request(op, None, {"name": "n", "secret_string": "v"})
    assert isinstance(built, sm.CreateSecretRequest)
    assert str(uuid.UUID(built.client_request_token)) == built.client_request_token
    given = _ops.build_request(op, None, {"name": "n", "client_request_token": "t" * 32})
    assert isinstance(given, sm.CreateSecretRequest) and given.client_request_token == "t" * 32
    original = sm.PutSecretValueRequest(secret_id="s", secret_string="v")
    put = _ops.build_request(_ops.operation(_ops.SECRETS, "PutSecretValue"), original, {})
    assert isinstance(put, sm.PutSecretValueRequest) and len(put.client_request_token) == 36
    assert not original.HasField("client_request_token")  # the caller's message is not modified
    rotate = _ops.build_request(_ops.operation(_ops.SECRETS, "RotateSecret"), None, {"secret_id": "s"})
    assert isinstance(rotate, sm.RotateSecretRequest)
    assert str(uuid.UUID(rotate.client_request_token)) == rotate.client_request_token  # as boto3 does
    get = _ops.build_request(_ops.operation(_ops.SECRETS, "GetSecretValue"), None, {"secret_id": "s"})
    assert get == sm.GetSecretValueRequest(secret_id="s")
    with pytest.raises(ValueError):
        _ops.build_request(_ops.operation(_ops.SECRETS, "GetSecretValue"), None, {"bogus": 1})


def test_endpoint_forms() -> None:
    assert _ops.target_of("127.0.0.1:7443") == "127.0.0.1:7443"
    assert _ops.target_of("https://coffer.example:443/") == "coffer.example:443"
    with pytest.raises(ValueError):
        _ops.target_of("http://insecure:80")

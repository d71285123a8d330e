"""The SDK's credentials: the signing key is derived once, a file provider picks up a renewed session, and
the signed metadata verifies."""

from __future__ import annotations

import json
import os
from pathlib import Path

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client.credentials import Credentials, FileCredentials, as_provider, signed_metadata
from coffer.crypto import signing
from coffer.crypto.access_keys import derive_signing_key, token_digest


def _write(path: Path, akid: str, secret: str, token: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"access_key_id": akid, "secret_access_key": secret, "session_token": token}))
    os.replace(tmp, path)  # a new inode, as a renewal job writes it


def test_credentials_derive_the_signing_key_and_hide_the_secret() -> None:
    creds = Credentials("AKIA" + "A" * 16, "secret-value")
    assert creds.signing_key == derive_signing_key("secret-value")
    assert "secret-value" not in repr(creds)
    provider = as_provider(creds)
    assert provider is not None and provider() is creds


def test_signed_metadata_verifies_with_the_session_token() -> None:
    creds = Credentials("ASIA" + "B" * 16, "s", "tok")
    request = sm.GetSecretValueRequest(secret_id="x")
    method = "/coffer.api.secrets.v1.SecretsManagerService/GetSecretValue"
    md = dict(signed_metadata(creds, method, request, clock=lambda: 1_000.0))
    assert md[signing.SESSION_TOKEN_HEADER] == "tok"
    key = signing.KeyMaterial(creds.access_key_id, creds.signing_key, token_sha256=token_digest("tok"))
    signing.verify_request(
        key,
        signing.parse_authorization(md["authorization"]),
        method=method,
        body=request.SerializeToString(deterministic=True),
        session_token="tok",
        now=1_000.0,
    )


def test_a_file_provider_picks_up_a_renewed_session(tmp_path: Path) -> None:
    path = tmp_path / "rotation-credentials.json"
    _write(path, "ASIA" + "C" * 16, "first", "t1")
    now = [0.0]
    provider = FileCredentials(path, clock=lambda: now[0])
    assert provider().secret_access_key == "first"
    _write(path, "ASIA" + "D" * 16, "second", "t2")
    now[0] = 0.5  # checked at most once a second
    assert provider().access_key_id == "ASIA" + "C" * 16
    now[0] = 1.5
    assert (provider().access_key_id, provider().session_token) == ("ASIA" + "D" * 16, "t2")
    path.write_text("{half a file")  # while being replaced: the last good credentials stay
    now[0] = 3.0
    assert provider().access_key_id == "ASIA" + "D" * 16

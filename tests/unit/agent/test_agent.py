"""``coffer agent`` over a fake secrets client (local sockets only): AWS's agent's configuration keys and
limits, the SSRF token's variables, and its HTTP interface — the checks in its order with its statuses and
bodies, the query and path forms, GetSecretValue's JSON with ``CreatedDate`` as a string, Coffer's errors,
``refreshNow``, ``max_conn``, ``/ping``; and a caller that is not on loopback refused."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coffer.agent import (
    AgentConfig,
    AgentConfigError,
    is_loopback_peer,
    load_config,
    parse_config,
    read_ssrf_token,
    start_agent,
)
from coffer.agent.server import Agent
from coffer.client._ops import EndpointUnreachable
from coffer.core import errors
from coffer.testing.cache_fakes import FakeSecretsClient
from coffer.testing.wait import eventually

pytestmark = pytest.mark.timeout(30)

TOKEN = "ssrf-token-123"
HEADER = {"X-Aws-Parameters-Secrets-Token": TOKEN}


# -- configuration -----------------------------------------------------------------------------------------


def test_defaults_are_aws_agents() -> None:
    cfg = parse_config({})
    assert (cfg.http_port, cfg.ttl_seconds, cfg.cache_size, cfg.max_conn, cfg.path_prefix) == (
        2773,
        300,
        1000,
        800,
        "/v1/",
    )
    assert cfg.ssrf_headers == ("X-Aws-Parameters-Secrets-Token", "X-Vault-Token")
    assert cfg.ssrf_env_variables == ("AWS_TOKEN", "AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN")


def test_file_with_quoted_numbers(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        'http_port = "2775"\nttl_seconds = 60\ncache_size = "10"\nlog_level = "debug"\n'
        'ssrf_headers = ["X-My-Token"]\nssrf_env_variables = ["MY_TOKEN"]\npath_prefix = "/secrets/"\n'
        "max_conn = 5\nlog_to_file = false\n"
    )
    cfg = load_config(path)
    assert cfg == AgentConfig(
        http_port=2775,
        ttl_seconds=60,
        cache_size=10,
        log_level="DEBUG",
        ssrf_headers=("X-My-Token",),
        ssrf_env_variables=("MY_TOKEN",),
        path_prefix="/secrets/",
        max_conn=5,
        log_to_file=False,
    )
    assert load_config(None) == AgentConfig()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"unknown_key": 1}, "Unknown configuration key 'unknown_key'"),
        ({"http_port": 80}, "between 1024 and 65535"),
        ({"http_port": "x"}, "whole number"),
        ({"ttl_seconds": 3601}, "between 0 and 3600"),
        ({"cache_size": 0}, "between 1 and 1000"),
        ({"max_conn": 1001}, "between 1 and 1000"),
        ({"path_prefix": "v1/"}, "must start with '/'"),
        ({"ssrf_headers": []}, "non-empty list"),
        ({"log_level": "loud"}, "log_level must be one of"),
        ({"log_to_file": "maybe"}, "true or false"),
        ({"credentials_file_path": "/x"}, "not supported"),
    ],
)
def test_bad_configuration_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        parse_config(data)


def test_bad_files_refused(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="Could not read"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("http_port = = 1")
    with pytest.raises(AgentConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    assert parse_config({"http_port": 0}).http_port == 0  # any free port


def test_ssrf_token_variables(tmp_path: Path) -> None:
    cfg = AgentConfig()
    assert read_ssrf_token(cfg, {"AWS_SESSION_TOKEN": "b", "AWS_TOKEN": "a"}) == "a"
    assert read_ssrf_token(cfg, {"AWS_SESSION_TOKEN": "b"}) == "b"
    (tmp_path / "tok").write_text("  from-file\n")
    assert read_ssrf_token(cfg, {"AWS_TOKEN": f"file://{tmp_path / 'tok'}"}) == "from-file"
    with pytest.raises(AgentConfigError, match=r"Could not read SSRF token variable\(s\)"):
        read_ssrf_token(cfg, {})
    with pytest.raises(AgentConfigError, match="unreadable file"):
        read_ssrf_token(cfg, {"AWS_TOKEN": f"file://{tmp_path / 'nope'}"})


def test_loopback_peer_check() -> None:
    assert is_loopback_peer(("127.0.0.1", 5000))
    assert is_loopback_peer(("127.8.9.1", 5000))
    assert is_loopback_peer(("::1", 5000, 0, 0))
    assert is_loopback_peer(("::ffff:127.0.0.1", 5000, 0, 0))
    assert not is_loopback_peer(("192.0.2.2", 5000))
    assert not is_loopback_peer(("::ffff:10.0.0.1", 5000, 0, 0))
    assert not is_loopback_peer(None)
    assert not is_loopback_peer(("not-an-address", 1))


# -- the HTTP interface ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(
    client: FakeSecretsClient, *, host: str = "127.0.0.1", **cfg: Any
) -> AsyncIterator[tuple[Agent, str, aiohttp.ClientSession]]:
    config = AgentConfig(log_to_file=False, **cfg)
    agent = await start_agent(config, client, TOKEN, host=host, port=0)
    try:
        async with aiohttp.ClientSession() as session:
            yield agent, f"http://{host}:{agent.port}", session
    finally:
        await agent.close()


async def fetch(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, str]:
    async with session.request(method, url, headers=headers) as response:
        return response.status, await response.text()


@pytest.fixture
def client() -> FakeSecretsClient:
    fake = FakeSecretsClient()
    fake.put("app/db", '{"password": "one"}', version="11111111-1111-1111-1111-111111111111")
    fake.put("bin", b"\x00\xff", version="22222222-2222-2222-2222-222222222222")
    return fake


async def test_success_body_is_aws_agents(client: FakeSecretsClient) -> None:
    async with running(client) as (_, base, session):
        status, body = await fetch(session, f"{base}/secretsmanager/get?secretId=app%2Fdb", HEADER)
        assert status == 200
        parsed = json.loads(body)
        assert list(parsed) == ["ARN", "Name", "VersionId", "SecretString", "VersionStages", "CreatedDate"]
        assert parsed == {
            "ARN": client.arn("app/db"),
            "Name": "app/db",
            "VersionId": "11111111-1111-1111-1111-111111111111",
            "SecretString": '{"password": "one"}',
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": "1569534789.000",
        }
        status, body = await fetch(session, f"{base}/v1/app/db", {"X-Vault-Token": TOKEN})
        assert status == 200 and json.loads(body)["Name"] == "app/db"
        status, body = await fetch(session, f"{base}/v1/bin?versionStage=AWSCURRENT", HEADER)
        assert status == 200 and base64.b64decode(json.loads(body)["SecretBinary"]) == b"\x00\xff"
        assert "SecretString" not in json.loads(body)
        vid = "11111111-1111-1111-1111-111111111111"
        status, body = await fetch(
            session, f"{base}/secretsmanager/get?secretId=app/db&versionId={vid}", HEADER
        )
        assert status == 200 and json.loads(body)["VersionId"] == vid
    # the query and path forms of one id share an entry; by version id is another
    assert [c["secret_id"] for c in client.calls] == ["app/db", "bin", "app/db"]


@pytest.mark.parametrize(
    ("path", "headers", "method", "status", "body"),
    [
        ("/secretsmanager/get?secretId=app/db", {}, "GET", 403, "Bad Token"),
        (
            "/secretsmanager/get?secretId=app/db",
            {"X-Aws-Parameters-Secrets-Token": "wrong"},
            "GET",
            403,
            "Bad Token",
        ),
        ("/v1/app/db", {**HEADER, "X-Forwarded-For": "10.0.0.1"}, "GET", 400, "Forwarded"),
        ("/v1/app/db", {"X-Forwarded-For": "10.0.0.1"}, "GET", 400, "Forwarded"),
        ("/secretsmanager/get?secretId=app/db", HEADER, "POST", 405, "Not allowed"),
        ("/other", HEADER, "GET", 404, "Not found"),
        ("/other", {}, "GET", 403, "Bad Token"),
        ("/secretsmanager/get?secretId=app/db&foo=1", HEADER, "GET", 400, "unknown parameter: foo"),
        ("/v1/app/db?secretId=x", HEADER, "GET", 400, "unknown parameter: secretId"),
        ("/secretsmanager/get", HEADER, "GET", 400, "missing parameter secretId"),
        ("/v1/", HEADER, "GET", 400, "missing secret ID"),
        ("/v1/app/db?refreshNow=soon", HEADER, "GET", 400, "invalid refreshNow value"),
        ("/ping", {}, "GET", 200, "healthy"),
    ],
)
async def test_checks_statuses_and_bodies(
    client: FakeSecretsClient, path: str, headers: dict[str, str], method: str, status: int, body: str
) -> None:
    async with running(client) as (_, base, session):
        assert await fetch(session, base + path, headers, method) == (status, body)
    assert client.calls == []


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (
            errors.NotFound("Secrets Manager can't find the specified secret."),
            400,
            {
                "__type": "ResourceNotFoundException",
                "message": "Secrets Manager can't find the specified secret.",
            },
        ),
        (errors.AccessDenied("no"), 400, {"__type": "AccessDeniedException", "message": "no"}),
        (errors.Internal("boom"), 500, {"__type": "InternalServiceError", "message": "boom"}),
        (errors.Internal(""), 500, {"__type": "InternalFailure"}),
        (EndpointUnreachable("x"), 502, {"__type": "ConnectionError", "message": "Read Error"}),
    ],
)
async def test_service_errors(
    client: FakeSecretsClient, error: errors.CofferError, status: int, body: dict[str, str]
) -> None:
    client.failure = error
    async with running(client) as (_, base, session):
        got_status, got_body = await fetch(session, f"{base}/v1/app/db", HEADER)
    assert (got_status, json.loads(got_body)) == (status, body)


async def test_stage_without_version_is_not_found(client: FakeSecretsClient) -> None:
    async with running(client) as (_, base, session):
        status, body = await fetch(session, f"{base}/v1/app/db?versionStage=AWSPENDING", HEADER)
    assert status == 400 and json.loads(body)["__type"] == "ResourceNotFoundException"


async def test_cache_and_refresh_now(client: FakeSecretsClient) -> None:
    async with running(client, ttl_seconds=3600) as (_, base, session):
        for _ in range(3):
            assert (await fetch(session, f"{base}/v1/app/db", HEADER))[0] == 200
        assert len(client.calls) == 1
        client.put("app/db", "two")
        status, body = await fetch(session, f"{base}/v1/app/db?refreshNow=TRUE", HEADER)
        assert status == 200 and json.loads(body)["SecretString"] == "two"
        assert json.loads((await fetch(session, f"{base}/v1/app/db", HEADER))[1])["SecretString"] == "two"
    assert len(client.calls) == 2


async def test_max_conn(client: FakeSecretsClient) -> None:
    client.gate = asyncio.Event()
    async with running(client, max_conn=1) as (_agent, base, session):
        slow = asyncio.create_task(fetch(session, f"{base}/v1/app/db", HEADER))
        await eventually(lambda: len(client.calls) == 1, timeout=5)
        assert await fetch(session, f"{base}/v1/bin", HEADER) == (429, "Connection limit exceeded")
        assert await fetch(session, f"{base}/ping") == (200, "healthy")  # /ping has headroom
        client.gate.set()
        assert (await slow)[0] == 200
        assert (await fetch(session, f"{base}/v1/bin", HEADER))[0] == 200


def _non_loopback_address() -> str | None:
    """This host's address on its default route (no packet is sent), when it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_non_loopback_caller_refused(client: FakeSecretsClient) -> None:
    address = _non_loopback_address()
    if address is None:  # no such interface here: the check itself is what refuses
        assert not is_loopback_peer(("192.0.2.2", 1))
        return
    async with running(client, host=address) as (_, base, session):
        assert await fetch(session, f"{base}/v1/app/db", HEADER) == (403, "Forbidden")
        assert await fetch(session, f"{base}/ping") == (403, "Forbidden")
    assert client.calls == []


async def test_bound_socket_keeps_answers_on_host(client: FakeSecretsClient) -> None:
    async with running(client) as (agent, _base, _session):
        assert agent.port is not None and agent.port > 0
        runner = agent._runner
        assert runner is not None
        (site,) = runner.sites
        sock = site._sock  # type: ignore[attr-defined]
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 1
        assert sock.getsockname()[0] == "127.0.0.1"

"""``--region`` picks a region of a multi-region profile (``make run REGIONS=2``): the CLI (before or after
the command), the SDK's ``from_profile(region=...)``, and ``coffer status`` over every region."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from coffer.cli.main import EXIT_CONFIG, EXIT_NOT_SERVING, build_parser, main
from coffer.client.profile import ConfigurationError, Connection, load_profile, resolve_connection
from coffer.client.sync import CofferClient
from coffer.embedded import free_port


def two_region_profile(tmp_path: Path, *, ports: tuple[int, int] = (7443, 7453)) -> Path:
    for region in ("local-1", "local-2"):
        (tmp_path / region).mkdir()
        (tmp_path / region / "ca.crt").write_text("not a certificate")

    def entry(region: str, port: int) -> dict[str, object]:
        return {
            "endpoint": f"127.0.0.1:{port}",
            "ca_file": f"{region}/ca.crt",
            "access_key_id": f"AKIA{region.upper().replace('-', 'X')}AAAAAAAAAA",
            "secret_access_key": f"secret-{region}",
            "services": {"gateway": f"127.0.0.1:{port}", "store": f"127.0.0.1:{port + 1}"},
            "operator_cert": f"{region}/operator.crt",
            "operator_key": f"{region}/operator.key",
        }

    doc = {
        **entry("local-1", ports[0]),
        "region": "local-1",
        "regions": {"local-1": entry("local-1", ports[0]), "local-2": entry("local-2", ports[1])},
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(doc))
    return path


def _akid(conn: Connection) -> str | None:
    return conn.credentials.access_key_id if conn.credentials is not None else None


def test_region_selects_its_endpoint_ca_and_access_key(tmp_path: Path) -> None:
    profile = load_profile(two_region_profile(tmp_path))
    assert profile.region_names == ["local-1", "local-2"]
    default = resolve_connection(profile=profile, env={})
    assert (default.endpoint, _akid(default), default.region) == (
        "127.0.0.1:7443",
        "AKIALOCALX1AAAAAAAAAA",
        "local-1",
    )
    second = resolve_connection(profile=profile, region="local-2", env={})
    assert (second.endpoint, _akid(second), second.region) == (
        "127.0.0.1:7453",
        "AKIALOCALX2AAAAAAAAAA",
        "local-2",
    )
    assert second.credentials is not None and second.credentials.secret_access_key == "secret-local-2"
    assert second.ca_file == tmp_path / "local-2" / "ca.crt"
    from_env = resolve_connection(profile=profile, env={"COFFER_REGION": "local-2"})
    assert from_env.endpoint == "127.0.0.1:7453"
    explicit = resolve_connection(profile=profile, region="local-2", endpoint="h:1", env={})
    assert explicit.endpoint == "h:1"  # an explicit endpoint wins over the profile's regions
    with pytest.raises(ConfigurationError, match="local-9 is not in the profile"):
        resolve_connection(profile=profile, region="local-9", env={})


def test_a_one_region_profile_refuses_another_region(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"endpoint": "h:1", "ca_file": "ca", "region": "local-1"}))
    profile = load_profile(path)
    assert resolve_connection(profile=profile, region="local-1", env={}).endpoint == "h:1"
    with pytest.raises(ConfigurationError, match="local-2 is not in the profile"):
        resolve_connection(profile=profile, region="local-2", env={})


def test_region_is_a_global_option_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--region", "local-2", "secretsmanager", "list-secrets"])
    after = parser.parse_args(["secretsmanager", "list-secrets", "--region", "local-2"])
    neither = parser.parse_args(["secretsmanager", "list-secrets"])
    assert before.region == after.region == "local-2" and neither.region is None


def test_sdk_from_profile_takes_a_region(tmp_path: Path) -> None:
    path = two_region_profile(tmp_path)
    (tmp_path / "local-2" / "ca.crt").write_text("")  # grpc accepts an empty root set at construction
    (tmp_path / "local-1" / "ca.crt").write_text("")
    with CofferClient.from_profile(path, region="local-2") as client:
        assert (client.endpoint, client.region) == ("127.0.0.1:7453", "local-2")
    with CofferClient.from_profile(path) as client:
        assert (client.endpoint, client.region) == ("127.0.0.1:7443", "local-1")
    with pytest.raises(ConfigurationError):
        CofferClient.from_profile(path, region="eu-west-1")


def test_status_covers_every_region_of_the_profile(tmp_path: Path) -> None:
    path = two_region_profile(tmp_path, ports=(free_port(), free_port()))
    out, err = io.StringIO(), io.StringIO()
    code = main(["status", "--profile", str(path), "--timeout", "0.2"], stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    assert code == EXIT_NOT_SERVING
    assert [line.split()[:2] for line in lines] == [
        ["local-1", "gateway"],
        ["local-1", "store"],
        ["local-2", "gateway"],
        ["local-2", "store"],
    ]
    assert all("UNREACHABLE" in line for line in lines)
    assert "local-2 gateway (UNREACHABLE)" in err.getvalue()
    out = io.StringIO()
    main(
        ["status", "--region", "local-2", "--profile", str(path), "--timeout", "0.2"], stdout=out, stderr=err
    )
    assert {line.split()[0] for line in out.getvalue().splitlines()} == {"local-2"}
    code = main(["status", "--region", "nowhere", "--profile", str(path)], stdout=out, stderr=err)
    assert code == EXIT_CONFIG

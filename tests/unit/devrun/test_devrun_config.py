"""Pure pieces of the ``make run`` supervisor: settings handed to services, addresses, URLs, log tails."""

from __future__ import annotations

from pathlib import Path

import pytest

from coffer.devrun import Deployment, connect_address, main, settings_env, tail, with_database
from coffer.settings import DEFAULT_PORTS, SERVICES, Settings


def test_settings_env_round_trips_through_from_env(tmp_path: Path) -> None:
    original = Settings.from_env(
        {
            "COFFER_HOME": str(tmp_path),
            "COFFER_REGION": "eu-test-2",
            "COFFER_ACCOUNT_ID": "123456789012",
            "COFFER_DATABASE_URL": "postgresql://postgres:@/coffer?host=/x",
            "COFFER_REDIS_URL": "redis://:pw@127.0.0.1:1/0",
            "COFFER_KMS_ADDR": "127.0.0.1:17445",
            "COFFER_PURGE_INTERVAL_SECONDS": "1.5",
            "COFFER_LOG_LEVEL": "debug",
        }
    )
    assert Settings.from_env(settings_env(original)) == original


def test_connect_address_maps_wildcards_to_loopback() -> None:
    assert connect_address("0.0.0.0:7443") == "127.0.0.1:7443"
    assert connect_address("[::]:7443") == "[::1]:7443"
    assert connect_address("127.0.0.1:7444") == "127.0.0.1:7444"
    assert connect_address("localhost:1") == "localhost:1"


def test_with_database_keeps_host_and_query() -> None:
    url = "postgresql://postgres:@/postgres?host=%2Ftmp%2Fpg"
    assert with_database(url, "coffer") == "postgresql://postgres:@/coffer?host=%2Ftmp%2Fpg"


def test_tail_returns_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, 3) == ["line 97", "line 98", "line 99"]
    assert tail(tmp_path / "missing.log") == []


def test_more_than_one_region_is_refused_with_a_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COFFER_HOME", str(tmp_path / "home"))
    assert main(["--regions", "3"]) == 2
    err = capsys.readouterr().err
    assert "multi-region" in err and "not implemented yet" in err
    assert not (tmp_path / "home").exists()


def test_in_home_uses_free_ports_and_the_given_home(tmp_path: Path) -> None:
    deployment = Deployment.in_home(tmp_path / "h", env={"COFFER_REGION": "eu-test-1"})
    ports = {deployment.settings.addr_of(name) for name in SERVICES}
    assert len(ports) == 4 and not ports & {f"127.0.0.1:{p}" for p in DEFAULT_PORTS.values()}
    info = deployment.info()
    assert info.home == (tmp_path / "h").resolve() and info.region == "eu-test-1"
    assert info.ca_file == info.pki_dir / "ca.crt" and info.profile_path == info.home / "profile.json"
    assert info.services == {name: deployment.settings.addr_of(name) for name in SERVICES}
    defaults = Deployment.in_home(tmp_path / "d", free_ports=False).settings
    assert {defaults.addr_of(name) for name in SERVICES} == {f"127.0.0.1:{p}" for p in DEFAULT_PORTS.values()}

"""Pure pieces of the ``make run`` supervisor: settings handed to services, addresses, URLs, log tails."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from coffer import settings as settings_module
from coffer.client.credentials import Credentials
from coffer.client.profile import load_profile
from coffer.devrun import (
    Deployment,
    MultiRegion,
    connect_address,
    main,
    region_envs,
    settings_env,
    tail,
    with_database,
    with_peers,
)
from coffer.settings import COMMON_KEYS, DEFAULT_PORTS, SERVICE_KEYS, SERVICES, Settings, service_env


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


def test_the_throttle_settings_reach_the_gateway(tmp_path: Path) -> None:
    original = Settings.from_env(
        {
            "COFFER_HOME": str(tmp_path),
            "COFFER_THROTTLE": "off",
            "COFFER_THROTTLE_RATES": '{"GetSecretValue": 5, "kms:Encrypt": 2.5}',
            "COFFER_THROTTLE_PRINCIPAL_SHARE": "0.25",
            "COFFER_THROTTLE_BURST_SECONDS": "2",
        }
    )
    assert Settings.from_env(settings_env(original)) == original
    gateway = service_env("gateway", settings_env(original))
    assert gateway["COFFER_THROTTLE"] == "off"
    assert json.loads(gateway["COFFER_THROTTLE_RATES"]) == {"GetSecretValue": 5, "kms:Encrypt": 2.5}
    assert "COFFER_THROTTLE" not in service_env("store", settings_env(original))


def test_every_setting_read_reaches_a_service_that_reads_it() -> None:
    """A COFFER_* variable ``Settings.from_env`` reads but no service is given would be silently dropped
    (``service_env`` filters each process's environment): every one must be common or some service's."""
    source = Path(settings_module.__file__).read_text()
    read = set(re.findall(r'e\.get\("(COFFER_[A-Z0-9_]+)"', source)) | set(
        re.findall(r'e\["(COFFER_[A-Z0-9_]+)"\]', source)
    )
    assert len(read) > 30
    given = set(COMMON_KEYS).union(*SERVICE_KEYS.values())
    assert read - given == set()
    watch = {k for k in read if k.startswith("COFFER_WATCH_")}
    assert watch and watch <= set(service_env("store", dict.fromkeys(watch, "1")))


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


def test_an_impossible_region_count_is_refused_with_a_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COFFER_HOME", str(tmp_path / "home"))
    assert main(["--regions", "0"]) == 2
    assert "--regions 0" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()


def test_region_envs_give_each_region_its_home_ports_database_and_stream(tmp_path: Path) -> None:
    base = {
        "COFFER_HOME": str(tmp_path / "c"),
        "COFFER_DATABASE_URL": "postgresql://u:@/coffer?host=/x",
        "COFFER_PKI_DIR": str(tmp_path / "c" / "pki"),
        "PATH": "/bin",
    }
    first, second = (Settings.from_env(env) for env in region_envs(base, 2))
    assert (first.region, second.region) == ("local-1", "local-2")
    assert first.home == (tmp_path / "c").resolve()
    assert second.home == first.home / "regions" / "local-2"
    assert second.pki_dir == second.home / "pki" and second.root_key_file.is_relative_to(second.home)
    assert {first.addr_of(n) for n in SERVICES} == {f"127.0.0.1:{p}" for p in DEFAULT_PORTS.values()}
    assert {second.addr_of(n) for n in SERVICES} == {f"127.0.0.1:{p + 10}" for p in DEFAULT_PORTS.values()}
    assert first.database_url == base["COFFER_DATABASE_URL"]
    assert second.database_url == "postgresql://u:@/coffer_local_2?host=/x"
    assert first.rotation_stream_prefix != second.rotation_stream_prefix


def test_with_peers_points_each_region_at_the_others_store_and_ca(tmp_path: Path) -> None:
    envs = with_peers(region_envs({"COFFER_HOME": str(tmp_path / "c")}, 3))
    settings = [Settings.from_env(env) for env in envs]
    for own in settings:
        others = [s for s in settings if s is not own]
        assert [p.region for p in own.peers] == [s.region for s in others]
        assert [p.endpoint for p in own.peers] == [s.store_addr for s in others]
        assert [p.ca_file for p in own.peers] == [s.pki_dir / "ca.crt" for s in others]
        assert Settings.from_env(settings_env(own)) == own  # COFFER_PEERS round-trips to the services


def test_multi_region_profile_keeps_the_default_region_at_the_top(tmp_path: Path) -> None:
    multi = MultiRegion.from_envs(region_envs({"COFFER_HOME": str(tmp_path / "c")}, 2), echo=lambda _: None)
    for deployment, akid in zip(
        multi.deployments, ("AKIAONEONEONEONEONE2", "AKIATWOTWOTWOTWOTWO2"), strict=True
    ):
        deployment.admin_credentials = Credentials(akid, f"secret-{akid}")
    multi.write_profile()
    doc = json.loads(multi.profile_path.read_text())
    assert doc["region"] == "local-1" and doc["access_key_id"] == "AKIAONEONEONEONEONE2"
    assert doc["endpoint"] == doc["regions"]["local-1"]["endpoint"] == "127.0.0.1:7443"
    assert doc["regions"]["local-2"]["endpoint"] == "127.0.0.1:7453"
    assert doc["regions"]["local-2"]["access_key_id"] == "AKIATWOTWOTWOTWOTWO2"
    assert doc["regions"]["local-2"]["secret_access_key"] == "secret-AKIATWOTWOTWOTWOTWO2"
    local2 = load_profile(multi.profile_path).select_region("local-2")
    assert local2.ca_file == multi.deployments[1].ca_file and local2.services["store"] == "127.0.0.1:7454"


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


def test_the_rotation_role_and_session_length_settings() -> None:
    default = Settings.from_env({})
    assert default.rotation_role_arn == "arn:aws:iam::000000000000:role/coffer-rotation"
    assert default.rotation_session_seconds == 3600
    chosen = Settings.from_env(
        {
            "COFFER_ROTATION_ROLE_ARN": "arn:aws:iam::000000000000:role/rotator",
            "COFFER_ROTATION_SESSION_SECONDS": "900",
        }
    )
    assert (chosen.rotation_role_arn, chosen.rotation_session_seconds) == (
        "arn:aws:iam::000000000000:role/rotator",
        900,
    )
    for bad in ("899", "43201"):
        with pytest.raises(ValueError, match="COFFER_ROTATION_SESSION_SECONDS"):
            Settings.from_env({"COFFER_ROTATION_SESSION_SECONDS": bad})
    # only the rotation service is given them
    env = {"COFFER_ROTATION_ROLE_ARN": "x", "COFFER_ROTATION_SESSION_SECONDS": "900"}
    assert set(service_env("rotation", env)) >= set(env)
    assert not set(service_env("store", env)) & set(env)


def test_make_run_serves_the_aws_endpoint_in_each_region_and_profiles_it(tmp_path: Path) -> None:
    from coffer.cli.aws_env import aws_env_lines
    from coffer.devrun.config import DEV_AWS_ADDR, with_aws_endpoint

    base = with_aws_endpoint({"COFFER_HOME": str(tmp_path / "c")})
    assert base["COFFER_AWS_ADDR"] == DEV_AWS_ADDR == "127.0.0.1:7447"
    assert with_aws_endpoint({"COFFER_AWS_ADDR": ""})["COFFER_AWS_ADDR"] == ""  # empty: off, as asked
    multi = MultiRegion.from_envs(region_envs(base, 2), echo=lambda _: None)
    assert [d.settings.aws_addr for d in multi.deployments] == ["127.0.0.1:7447", "127.0.0.1:7457"]
    gateway_env = multi.deployments[1].service_env("gateway")
    assert gateway_env["COFFER_AWS_ADDR"] == "127.0.0.1:7457"
    assert "COFFER_AWS_ADDR" not in multi.deployments[1].service_env("store")
    for deployment in multi.deployments:
        deployment.admin_credentials = Credentials("AKIAONEONEONEONEONE2", "s")
    multi.write_profile()
    profile = load_profile(multi.profile_path)
    assert profile.aws_endpoint_url == "https://127.0.0.1:7447"
    assert profile.select_region("local-2").aws_endpoint_url == "https://127.0.0.1:7457"
    lines = aws_env_lines(profile, "local-2")
    assert "export AWS_ENDPOINT_URL=https://127.0.0.1:7457" in lines
    assert "export AWS_DEFAULT_REGION=local-2" in lines


def test_make_run_replicas_listen_a_thousand_ports_up_and_call_every_replica_of_the_others(
    tmp_path: Path,
) -> None:
    deployment = Deployment(
        Settings.from_env(
            {
                "COFFER_HOME": str(tmp_path),
                "COFFER_AWS_ADDR": "127.0.0.1:7447",
                "COFFER_CONSOLE_ADDR": "127.0.0.1:7448",
            }
        ),
        replicas=2,
    )
    assert deployment.instances == [
        "kms", "kms-2", "store", "store-2", "gateway", "gateway-2", "rotation", "rotation-2"
    ]  # fmt: skip
    assert deployment.instance_addr("store-2") == "127.0.0.1:8444"
    assert deployment.endpoint == "127.0.0.1:7443,127.0.0.1:8443"
    env = deployment.service_env("store-2")
    assert env["COFFER_STORE_ADDR"] == "127.0.0.1:8444"  # it listens on its own address
    assert env["COFFER_KMS_ADDR"] == "127.0.0.1:7445,127.0.0.1:8445"  # it calls both kms replicas
    assert env["COFFER_LOG_FILE"].endswith("/logs/store-2.log")
    assert env["COFFER_METRICS_ADDR"] == "127.0.0.1:10465"  # 8444 + 2021
    assert env["COFFER_PKI_DIR"].endswith("service-pki/store")  # the service's identity, shared
    gateway = deployment.service_env("gateway-2")
    assert (
        gateway["COFFER_GATEWAY_ADDR"] == "127.0.0.1:8443" and gateway["COFFER_AWS_ADDR"] == "127.0.0.1:8447"
    )
    assert gateway["COFFER_CONSOLE_ADDR"] == "127.0.0.1:8448"
    assert deployment.service_env("gateway")["COFFER_CONSOLE_ADDR"] == "127.0.0.1:7448"
    rotation = deployment.service_env("rotation")
    assert rotation["COFFER_ROTATION_ADDR"] == "127.0.0.1:7446"
    assert rotation["COFFER_GATEWAY_ADDR"] == "127.0.0.1:7443,127.0.0.1:8443"
    single = Deployment(Settings.from_env({"COFFER_HOME": str(tmp_path)}))
    assert single.instances == ["kms", "store", "gateway", "rotation"]
    assert single.service_env("store")["COFFER_KMS_ADDR"] == "127.0.0.1:7445"


def test_replicas_on_free_ports_in_tests(tmp_path: Path) -> None:
    deployment = Deployment.in_home(tmp_path, replicas=2)
    addrs = {deployment.instance_addr(name) for name in deployment.instances}
    metrics = {deployment.metrics_addr(name) for name in deployment.instances}
    assert len(addrs) == 8 and len(metrics) == 8 and not addrs & metrics
    assert deployment.service_env("kms-2")["COFFER_KMS_ADDR"] == deployment.instance_addr("kms-2")


def test_make_run_serves_the_web_console_in_each_region_and_profiles_it(tmp_path: Path) -> None:
    from coffer.devrun.cli import _banner
    from coffer.devrun.config import DEV_CONSOLE_ADDR, console_url, with_aws_endpoint

    base = with_aws_endpoint({"COFFER_HOME": str(tmp_path / "c")})
    assert base["COFFER_CONSOLE_ADDR"] == DEV_CONSOLE_ADDR == "127.0.0.1:7448"
    assert with_aws_endpoint({"COFFER_CONSOLE_ADDR": ""})["COFFER_CONSOLE_ADDR"] == ""  # empty: off
    multi = MultiRegion.from_envs(region_envs(base, 2), echo=lambda _: None)
    assert [console_url(d.settings) for d in multi.deployments] == [
        "https://127.0.0.1:7448/",
        "https://127.0.0.1:7458/",
    ]
    assert multi.deployments[1].service_env("gateway")["COFFER_CONSOLE_ADDR"] == "127.0.0.1:7458"
    assert "COFFER_CONSOLE_ADDR" not in multi.deployments[1].service_env("store")
    for deployment in multi.deployments:
        deployment.admin_credentials = Credentials("AKIAONEONEONEONEONE2", "s")
    multi.write_profile()
    profile = json.loads(multi.profile_path.read_text())
    assert profile["console_url"] == "https://127.0.0.1:7448/"
    assert profile["regions"]["local-2"]["console_url"] == "https://127.0.0.1:7458/"
    banner = "\n".join(_banner(multi.deployments[0], wrote_user_profile=False))
    assert "Web console: https://127.0.0.1:7448/" in banner

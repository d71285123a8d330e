"""``coffer.redisconn``: COFFER_REDIS_URL for one Redis or a Sentinel-managed master (pure parsing; the
failover itself is tests/integration/rotation/test_rotation_redis_sentinel.py)."""

from __future__ import annotations

import pytest

from coffer.redisconn import SentinelTarget, endpoints, parse_sentinel_url, redact


def test_a_sentinel_url_names_every_sentinel_the_master_and_how_to_log_in() -> None:
    target = parse_sentinel_url(
        "redis+sentinel://app:p%40ss@s1:26380,[::1]:26381,s3/coffer-main/2?sentinel_password=sp"
    )
    assert target == SentinelTarget(
        sentinels=(("s1", 26380), ("::1", 26381), ("s3", 26379)),
        service="coffer-main",
        db=2,
        username="app",
        password="p@ss",
        sentinel_password="sp",
    )
    tls = parse_sentinel_url("rediss+sentinel://:pw@s1/m?ssl_ca_certs=/etc/ca.pem")
    assert tls is not None and tls.tls and tls.ssl_ca_certs == "/etc/ca.pem" and tls.db == 0
    assert tls.username is None and tls.password == "pw"


def test_other_urls_are_not_sentinel_urls() -> None:
    for url in ("redis://:pw@127.0.0.1:6379/0", "rediss://h:1/0", "unix:///tmp/r.sock", "", "nonsense"):
        assert parse_sentinel_url(url) is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://:pw@s1:26379", "name the master"),
        ("redis+sentinel://:pw@/m", "at least one sentinel"),
        ("redis+sentinel://:pw@s1:x/m", "'x' is not a port"),
        ("redis+sentinel://:pw@s1:70000/m", "out of range"),
        ("redis+sentinel://:pw@s1/m/zero", "'zero' is not a number"),
        ("redis+sentinel://:pw@s1/m/0/x", "the path is"),
        ("redis+sentinel://:pw@s1/m?sentinel_pasword=x", "unknown option(s) sentinel_pasword"),
    ],
)
def test_a_malformed_sentinel_url_says_what_to_fix_without_the_password(url: str, says: str) -> None:
    with pytest.raises(ValueError) as failed:
        parse_sentinel_url(url)
    assert says in str(failed.value)
    assert "pw" not in str(failed.value).replace(":***@", "")


def test_redact_hides_every_password() -> None:
    assert redact("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("redis://user:pw@host:1/2") == "redis://user:***@host:1/2"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert (
        redact("redis+sentinel://u:pw@s1:1,s2:2/m/0?sentinel_password=sp&ssl_ca_certs=/ca")
        == "redis+sentinel://u:***@s1:1,s2:2/m/0?sentinel_password=***&ssl_ca_certs=/ca"
    )


def test_endpoints_are_every_sentinel_or_the_one_server() -> None:
    assert endpoints("redis+sentinel://:pw@s1:1,10.0.0.2/m") == ["[s1]:1", "[10.0.0.2]:26379"]
    assert endpoints("redis://:pw@127.0.0.1:6390/0") == ["[127.0.0.1]:6390"]
    assert endpoints("redis://h/0") == ["[h]:6379"]
    assert endpoints("unix:///tmp/r.sock") == []
    assert endpoints("redis+sentinel://:pw@s1") == []  # malformed: the service refuses it at start

"""``coffer.targets.own_endpoints``: every endpoint of the deployment a rotation must never connect to,
replicas (``ip:port,ip:port``, ``dns:///name:port``) and a Sentinel URL's sentinels included."""

from __future__ import annotations

from pathlib import Path

from coffer.core.targets import TargetPolicy
from coffer.settings import Settings
from coffer.targets import own_endpoints


def test_every_replica_and_every_sentinel_is_our_own(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "COFFER_HOME": str(tmp_path),
            "COFFER_STORE_ADDR": "127.0.0.1:7444,127.0.0.1:8444",
            "COFFER_KMS_ADDR": "dns:///kms-headless:7445",
            "COFFER_REDIS_URL": "redis+sentinel://:pw@10.0.0.7:26379,10.0.0.8:26380/coffer/0",
            "COFFER_DATABASE_URL": "postgresql://u:p@10.0.0.9:5433/coffer",
        }
    )
    endpoints = own_endpoints(settings)
    for expected in (
        "127.0.0.1:7444",
        "127.0.0.1:8444",
        "kms-headless:7445",
        "[10.0.0.7]:26379",
        "[10.0.0.8]:26380",
        "[10.0.0.9]:5433",
    ):
        assert expected in endpoints, endpoints
    own = TargetPolicy.from_settings(None, own_endpoints=endpoints).own
    assert {("127.0.0.1", 8444), ("kms-headless", 7445), ("10.0.0.8", 26380)} <= own

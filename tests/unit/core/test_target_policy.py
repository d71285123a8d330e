"""The rotation target policy (``coffer.core.targets``): parsing the allow-list and deciding, table-driven."""

from __future__ import annotations

import pytest

from coffer.core.targets import TargetPolicy, TargetRefused, parse_allowed, parse_rule, split_endpoint

OWN = ("127.0.0.1:7443", "127.0.0.1:7444", "0.0.0.0:7445", "redis.internal:6379")
DEFAULT = TargetPolicy.from_settings(None, own_endpoints=OWN)
TESTS = TargetPolicy.from_settings("*, 127.0.0.1:5433, [::1]:5433, db.local", own_endpoints=OWN)
ONLY = TargetPolicy.from_settings('["10.0.0.0/8:5432", "db.example.com"]', own_endpoints=OWN)

# (policy, host, port, resolved addresses, refused because ... | None = allowed)
CASES = [
    # Unix sockets and host lists, whatever the policy says
    (TESTS, "/var/run/postgresql", 5432, ["127.0.0.1"], "Unix socket"),
    (TESTS, "/tmp/coffer-test-pg/data", 5433, ["127.0.0.1"], "Unix socket"),
    (TESTS, "@abstract", 5432, ["127.0.0.1"], "Unix socket"),
    (TESTS, "", 5432, ["127.0.0.1"], "Unix socket"),
    (TESTS, "a,b", 5432, ["127.0.0.1"], "Unix socket"),
    (TESTS, "db.local\n", 5432, ["10.1.1.1"], "Unix socket"),
    # loopback, link-local, unspecified by default
    (DEFAULT, "127.0.0.1", 5432, ["127.0.0.1"], "loopback"),
    (DEFAULT, "127.8.9.10", 5432, ["127.8.9.10"], "loopback"),
    (DEFAULT, "::1", 5432, ["::1"], "loopback"),
    (DEFAULT, "localhost", 5432, ["127.0.0.1", "::1"], "loopback"),
    (DEFAULT, "169.254.169.254", 80, ["169.254.169.254"], "link-local"),
    (DEFAULT, "fe80::1", 80, ["fe80::1%eth0"], "link-local"),
    (DEFAULT, "0.0.0.0", 5432, ["0.0.0.0"], "unspecified"),
    (DEFAULT, "::", 5432, ["::"], "unspecified"),
    (DEFAULT, "::ffff:127.0.0.1", 5432, ["::ffff:127.0.0.1"], "loopback"),
    # a name is checked at EVERY address it resolves to
    (DEFAULT, "evil.example", 5432, ["203.0.113.7", "127.0.0.1"], "loopback"),
    (DEFAULT, "gone.example", 5432, [], "did not resolve"),
    (DEFAULT, "db.example.com", 5432, ["203.0.113.7"], None),
    (DEFAULT, "10.2.3.4", 3306, ["10.2.3.4"], None),
    # Coffer's own endpoints: refused even when the allow-list covers them
    (TESTS, "127.0.0.1", 7444, ["127.0.0.1"], "own endpoints"),
    (TESTS, "localhost", 7445, ["127.0.0.1"], "own endpoints"),
    (TESTS, "redis.internal", 6379, ["10.9.9.9"], "own endpoints"),
    # explicit entries
    (TESTS, "127.0.0.1", 5433, ["127.0.0.1"], None),
    (TESTS, "::1", 5433, ["::1"], None),
    (TESTS, "127.0.0.1", 5434, ["127.0.0.1"], "loopback"),
    (TESTS, "db.local", 5432, ["127.0.0.1"], None),
    (TESTS, "DB.Local.", 5432, ["127.0.0.1"], None),
    # a list without '*' allows only what it lists
    (ONLY, "10.1.2.3", 5432, ["10.1.2.3"], None),
    (ONLY, "10.1.2.3", 5433, ["10.1.2.3"], "not in COFFER_ROTATION_ALLOWED_TARGETS"),
    (ONLY, "203.0.113.7", 5432, ["203.0.113.7"], "not in COFFER_ROTATION_ALLOWED_TARGETS"),
    (ONLY, "db.example.com", 1234, ["203.0.113.7"], None),
    (ONLY, "169.254.169.254", 80, ["169.254.169.254"], "link-local"),
    (DEFAULT, "db", 0, ["10.0.0.1"], "not a TCP port"),
]


@pytest.mark.parametrize(("policy", "host", "port", "addresses", "refused"), CASES)
def test_policy_decides(
    policy: TargetPolicy, host: str, port: int, addresses: list[str], refused: str | None
) -> None:
    if refused is None:
        policy.check(host, port, addresses)
        return
    with pytest.raises(TargetRefused, match=refused):
        policy.check(host, port, addresses)


@pytest.mark.parametrize(
    ("raw", "count"),
    [("", 0), ("*", 1), ("a.b, 10.0.0.0/8 ,", 2), ('["*", "[fd00::/8]:5432"]', 2), ("[::1]:5432", 1)],
)
def test_allow_list_parses(raw: str, count: int) -> None:
    assert len(parse_allowed(raw)) == count


@pytest.mark.parametrize("bad", ["10.0.0.0/8:x", "host:70000", "[::1", "bad host", "a..b", "[::1]x"])
def test_allow_list_rejects_bad_entries(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_rule(bad)


def test_split_endpoint() -> None:
    assert split_endpoint("[::1]:80") == ("::1", 80)
    assert split_endpoint("db:5432") == ("db", 5432)
    with pytest.raises(ValueError):
        split_endpoint("nohost")

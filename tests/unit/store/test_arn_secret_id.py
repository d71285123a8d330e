"""Secret ARNs and SecretId resolution."""

from __future__ import annotations

import random
import string

import pytest

from coffer.core.arn import (
    SUFFIX_ALPHABET,
    SecretRef,
    make_arn,
    new_suffix,
    parse_arn,
    partial_arn,
    resolve_secret_id,
)

HERE = {"partition": "aws", "region": "local-1", "account": "000000000000"}
FULL = "arn:aws:secretsmanager:local-1:000000000000:secret:db/prod-a1B2c3"


def test_arn_format() -> None:
    arn = make_arn(partition="aws", region="local-1", account="000000000000", name="db/prod", suffix="a1B2c3")
    assert str(arn) == FULL


def test_suffix_is_six_alphanumerics_from_the_source() -> None:
    rng = random.Random(7)
    suffixes = {new_suffix(rng.randrange) for _ in range(200)}
    assert all(len(s) == 6 and set(s) <= set(string.ascii_letters + string.digits) for s in suffixes)
    assert len(suffixes) == 200  # fresh every time
    assert new_suffix(lambda n: 0) == SUFFIX_ALPHABET[0] * 6
    assert new_suffix(lambda n: n - 1) == SUFFIX_ALPHABET[-1] * 6


def test_parse_arn_round_trip() -> None:
    arn = parse_arn(FULL)
    assert arn is not None
    assert (arn.partition, arn.region, arn.account, arn.name, arn.suffix) == (
        "aws",
        "local-1",
        "000000000000",
        "db/prod",
        "a1B2c3",
    )
    assert str(arn) == FULL
    assert parse_arn(partial_arn(name="db/prod", **HERE)) is None
    assert parse_arn("db/prod") is None


@pytest.mark.parametrize(
    ("secret_id", "expected"),
    [
        ("db/prod", SecretRef(arn=None, name="db/prod")),
        # full ARN: the exact ARN and nothing else
        (FULL, SecretRef(arn=FULL, name="db/prod-a1B2c3")),
        # a name that ends in -XXXXXX is still a name
        ("db-abcdef", SecretRef(arn=None, name="db-abcdef")),
        # partial ARN (no suffix): by name
        ("arn:aws:secretsmanager:local-1:000000000000:secret:db/prod", SecretRef(arn=None, name="db/prod")),
        # a suffix-looking tail that is not 6 alphanumerics is part of the name
        ("arn:aws:secretsmanager:local-1:000000000000:secret:my-app", SecretRef(arn=None, name="my-app")),
        ("arn:aws:secretsmanager:local-1:000000000000:secret:a-b_c", SecretRef(arn=None, name="a-b_c")),
    ],
)
def test_resolution(secret_id: str, expected: SecretRef) -> None:
    assert resolve_secret_id(secret_id, **HERE) == expected


@pytest.mark.parametrize(
    "secret_id",
    [
        "arn:aws:secretsmanager:eu-west-1:000000000000:secret:db/prod-a1B2c3",  # another region
        "arn:aws-cn:secretsmanager:local-1:000000000000:secret:db/prod-a1B2c3",  # another partition
        "arn:aws:kms:local-1:000000000000:key/1234",  # not a secret
        "arn:aws:secretsmanager:local-1:000000000000:parameter:x",
    ],
)
def test_foreign_arns_resolve_to_nothing(secret_id: str) -> None:
    assert resolve_secret_id(secret_id, **HERE) is None


def test_another_accounts_arn_resolves_in_that_account() -> None:
    full = "arn:aws:secretsmanager:local-1:111111111111:secret:db/prod-a1B2c3"
    assert resolve_secret_id(full, **HERE) == SecretRef(
        arn=full, name="db/prod-a1B2c3", account="111111111111"
    )
    partial = "arn:aws:secretsmanager:local-1:111111111111:secret:db/prod"
    assert resolve_secret_id(partial, **HERE) == SecretRef(arn=None, name="db/prod", account="111111111111")
    assert resolve_secret_id("db/prod", **HERE) == SecretRef(arn=None, name="db/prod", account="000000000000")


def test_a_full_arn_never_falls_back_to_a_name() -> None:
    """AWS: a partial ARN whose name ends in ``-`` + 6 characters reads as a full ARN and is matched as one
    (ResourceNotFoundException when no secret has that ARN), never by the name it spells; a name or a
    suffix-free partial ARN is matched by name."""
    looks_full = resolve_secret_id("arn:aws:secretsmanager:local-1:000000000000:secret:db-abcdef", **HERE)
    assert looks_full is not None and looks_full.name_key is None
    assert looks_full.arn == "arn:aws:secretsmanager:local-1:000000000000:secret:db-abcdef"
    by_name = resolve_secret_id("db-abcdef", **HERE)
    assert by_name is not None and by_name.arn is None
    assert by_name.name_key == ["000000000000", "db-abcdef"]
    partial = resolve_secret_id("arn:aws:secretsmanager:local-1:000000000000:secret:db/prod", **HERE)
    assert partial is not None and partial.name_key == ["000000000000", "db/prod"]

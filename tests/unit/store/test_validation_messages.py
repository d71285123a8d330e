"""Bounds and patterns of the API model with AWS's ValidationException wording."""

from __future__ import annotations

import pytest

from coffer.core import errors
from coffer.core.validation import (
    INVALID_NAME_MESSAGE,
    Checker,
    check_one_value,
    check_recovery,
    check_token_present,
    require_filter_parts,
)


def failure(fn: object) -> errors.CofferError:
    c = Checker()
    fn(c)  # type: ignore[operator]
    with pytest.raises(errors.CofferError) as info:
        c.done()
    return info.value


def test_name_too_long_echoes_value_and_member() -> None:
    name = "a" * 513
    err = failure(lambda c: c.name(name))
    assert isinstance(err, errors.Validation)
    assert err.code == "ValidationException"
    assert err.message == (
        f"1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: "
        "Member must have length less than or equal to 512"
    )


@pytest.mark.parametrize("name", ["bad name", "semi;colon", "star*", "ü", "with!bang", "colon:x"])
def test_invalid_name_characters(name: str) -> None:
    with pytest.raises(errors.Validation) as info:
        Checker().name(name)
    assert info.value.message == INVALID_NAME_MESSAGE
    assert info.value.message == (
        "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: "
        "-/_+=.@!"
    )


@pytest.mark.parametrize("name", ["a", "db/prod", "x_y+z=w.v@u-t", "A" * 512])
def test_valid_names(name: str) -> None:
    c = Checker()
    c.name(name)
    c.done()


def test_secret_id_accepts_arns_and_service_names_but_checks_other_names() -> None:
    c = Checker()
    c.secret_id("arn:aws:secretsmanager:local-1:000000000000:secret:x-abcdef")
    c.secret_id("rds!cluster-1234")
    c.done()
    with pytest.raises(errors.Validation, match="Invalid name"):
        Checker().secret_id("no spaces")
    err = failure(lambda c: c.secret_id(""))
    assert err.message.endswith(
        "Value '' at 'secretId' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1"
    )


def test_oversized_secret_string_is_measured_in_utf8_bytes_and_never_echoed() -> None:
    value = "é" * 40000  # 40000 characters, 80000 bytes
    err = failure(lambda c: c.secret_string(value))
    assert err.message == (
        "1 validation error detected: Value at 'secretString' failed to satisfy constraint: "
        "Member must have length less than or equal to 65536"
    )
    assert "é" not in err.message
    c = Checker()
    c.secret_string("x" * 65536)
    c.done()


def test_empty_values_are_refused() -> None:
    assert "greater than or equal to 1" in failure(lambda c: c.secret_string("")).message
    assert "at 'secretBinary'" in failure(lambda c: c.secret_binary(b"")).message


def test_tokens_need_32_to_64_characters() -> None:
    assert failure(lambda c: c.token("short")).message == (
        "1 validation error detected: Value 'short' at 'clientRequestToken' failed to satisfy constraint: "
        "Member must have length greater than or equal to 32"
    )
    assert "less than or equal to 64" in failure(lambda c: c.token("x" * 65)).message


def test_several_failures_are_reported_together() -> None:
    def both(c: Checker) -> None:
        c.description("d" * 2049)
        c.token("t")

    err = failure(both)
    assert err.message.startswith("2 validation errors detected: Value '")
    assert "at 'description'" in err.message and "at 'clientRequestToken'" in err.message
    assert "; " in err.message


def test_version_stage_lists() -> None:
    assert (
        "at 'versionStages' failed to satisfy constraint: Member must have length less than or equal to 20"
        in (failure(lambda c: c.version_stages([f"s{i}" for i in range(21)])).message)
    )
    msg = failure(lambda c: c.version_stages(["ok", "x" * 257])).message
    assert "Member must satisfy constraint: [Member must have length less than or equal to 256" in msg


def test_tags_are_checked_per_member() -> None:
    msg = failure(lambda c: c.tags([("ok", "ok"), ("k" * 129, "v")])).message
    assert (
        "at 'tags.2.member.key' failed to satisfy constraint: "
        "Member must have length less than or equal to 128" in msg
    )
    msg = failure(lambda c: c.tags([("k", "v" * 257)])).message
    assert "at 'tags.1.member.value'" in msg


def test_enums_and_numbers() -> None:
    assert failure(lambda c: c.enum("sortOrder", "up", ["asc", "desc"])).message == (
        "1 validation error detected: Value 'up' at 'sortOrder' failed to satisfy constraint: "
        "Member must satisfy enum value set: [asc, desc]"
    )
    assert failure(lambda c: c.number("maxResults", 101, min_value=1, max_value=100)).message.endswith(
        "Member must have value less than or equal to 100"
    )
    assert failure(lambda c: c.number("maxResults", 0, min_value=1, max_value=100)).message.endswith(
        "Member must have value greater than or equal to 1"
    )


def test_filters() -> None:
    msg = failure(lambda c: c.filters([("invalid", ["x"])])).message
    assert msg == (
        "1 validation error detected: Value 'invalid' at 'filters.1.member.key' failed to satisfy "
        "constraint: Member must satisfy enum value set: [description, name, tag-key, tag-value, "
        "primary-region, owning-service, all]"
    )
    assert "regular expression pattern" in failure(lambda c: c.filters([("name", ["semi;colon"])])).message
    c = Checker()
    c.filters([("name", ["!db/prod", "a b:c_d@e/f+g=h.i-j"])])
    c.done()
    with pytest.raises(errors.InvalidParameter) as no_key:
        require_filter_parts([("", ["x"])])
    assert no_key.value.message == "Invalid filter key"
    with pytest.raises(errors.InvalidParameter) as no_values:
        require_filter_parts([("name", [])])
    assert no_values.value.message == "Invalid filter values for key: name"


def test_rotation_token_is_sensitive() -> None:
    msg = failure(lambda c: c.rotation_token("secret;token" + "x" * 40)).message
    assert "Value at 'rotationToken'" in msg and "secret;token" not in msg


def test_business_rules() -> None:
    with pytest.raises(errors.InvalidParameter) as both:
        check_one_value("s", b"b")
    assert both.value.message == (
        "You can't specify both a binary secret value and a string secret value in the same secret."
    )
    with pytest.raises(errors.InvalidRequest) as token:
        check_token_present(has_value=True, token=None)
    assert (
        token.value.message == "You must provide a ClientRequestToken value. We recommend a UUID-type value."
    )
    check_token_present(has_value=False, token=None)
    for days in (6, 31, 0, -1):
        with pytest.raises(errors.InvalidParameter, match="between 7 and 30 days"):
            check_recovery(days, None)
    check_recovery(7, None)
    check_recovery(30, False)
    check_recovery(None, True)
    with pytest.raises(errors.InvalidParameter) as conflict:
        check_recovery(10, True)
    assert conflict.value.message == (
        "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays."
    )
    # the range is checked before the conflict
    with pytest.raises(errors.InvalidParameter, match="between 7 and 30"):
        check_recovery(3, True)

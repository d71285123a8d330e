"""Key identifier forms (key id, key ARN, alias name, alias ARN) and the server-side shape checks with AWS's
wording."""

from __future__ import annotations

import pytest

from coffer.core import errors
from coffer.kms import validation as v
from coffer.kms.ids import AliasRef, KeyIdRef, is_alias_form, parse_key_ref
from coffer.kms.model import Scope, Tag

SCOPE = Scope(partition="aws", region="local-1", account_id="000000000000")
KID = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:local-1:000000000000:key/{KID}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (KID, KeyIdRef(KID)),
        (KID.upper(), KeyIdRef(KID)),
        (ARN, KeyIdRef(KID)),
        ("mrk-" + "a" * 32, KeyIdRef("mrk-" + "a" * 32)),
        ("alias/my-key", AliasRef("alias/my-key")),
        ("arn:aws:kms:local-1:000000000000:alias/my-key", AliasRef("alias/my-key")),
    ],
)
def test_accepted_forms(value: str, expected: object) -> None:
    assert parse_key_ref(value, SCOPE, allow_alias=True) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fake-key-id", "Invalid keyId 'fake-key-id'"),
        ("a" * 32, f"Invalid keyId '{'a' * 32}'"),
        ("mrk-fake", "Invalid keyId 'mrk-fake'"),
        (f"arn:aws:kms:us-east-1:000000000000:key/{KID}", "Invalid arn us-east-1"),
        (
            f"arn:aws:kms:local-1:111111111111:key/{KID}",
            f"Key 'arn:aws:kms:local-1:111111111111:key/{KID}' does not exist",
        ),
        (
            "arn:aws:kms:local-1:111111111111:alias/x",
            "Alias arn:aws:kms:local-1:111111111111:alias/x is not found.",
        ),
        (
            "arn:aws:kms:local-1:000000000000:key/nope",
            "Invalid keyId 'arn:aws:kms:local-1:000000000000:key/nope'",
        ),
    ],
)
def test_malformed_forms_are_not_found_with_aws_text(value: str, message: str) -> None:
    with pytest.raises(errors.KmsNotFound) as info:
        parse_key_ref(value, SCOPE, allow_alias=True)
    assert info.value.code == "NotFoundException"
    assert info.value.message == message


@pytest.mark.parametrize("value", ["alias/my-key", "arn:aws:kms:local-1:000000000000:alias/my-key"])
def test_alias_forms_are_malformed_for_key_id_only_operations(value: str) -> None:
    assert is_alias_form(value)
    with pytest.raises(errors.KmsNotFound, match=r"^NotFoundException: Invalid keyId '"):
        parse_key_ref(value, SCOPE, allow_alias=False)
    assert parse_key_ref(ARN, SCOPE, allow_alias=False) == KeyIdRef(KID)


def test_generic_validation_texts() -> None:
    with pytest.raises(errors.Validation) as info:
        v.data_key_length(key_spec=None, number_of_bytes=2000)
    assert info.value.message == (
        "1 validation error detected: Value '2000' at 'numberOfBytes' failed to satisfy constraint: "
        "Member must have value less than or equal to 1024"
    )
    with pytest.raises(errors.Validation) as info:
        v.blob_length(b"x" * 5000, "plaintext", low=1, high=4096)
    assert info.value.message == (
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length less than or equal to 4096"
    )
    with pytest.raises(errors.Validation) as info:
        v.blob_length(b"", "plaintext", low=1, high=4096)
    assert info.value.message.endswith("Member must have length greater than or equal to 1")
    with pytest.raises(errors.Validation) as info:
        v.data_key_length(key_spec="AES_512", number_of_bytes=None)
    assert info.value.message.endswith("Member must satisfy enum value set: [AES_256, AES_128]")
    for spec, n in (("AES_256", None), (None, 7)):
        assert v.data_key_length(key_spec=spec, number_of_bytes=n) == (32 if spec else 7)
    for both in ((None, None), ("AES_256", 32)):
        with pytest.raises(
            errors.Validation,
            match=r"^ValidationException: Please specify either number of bytes or key spec\.$",
        ):
            v.data_key_length(key_spec=both[0], number_of_bytes=both[1])


@pytest.mark.parametrize("days", [0, 6, 31, 400])
def test_pending_window_bounds(days: int) -> None:
    with pytest.raises(errors.Validation) as info:
        v.pending_window(days)
    assert info.value.message == "PendingWindowInDays must be between 7 and 30"


def test_pending_window_and_rotation_period_defaults_and_limits() -> None:
    assert v.pending_window(None) == 30 and v.pending_window(7) == 7 and v.pending_window(30) == 30
    assert v.rotation_period(None) == 365 and v.rotation_period(90) == 90 and v.rotation_period(2560) == 2560
    with pytest.raises(errors.Validation, match="greater than or equal to 90"):
        v.rotation_period(89)
    with pytest.raises(errors.Validation, match="less than or equal to 2560"):
        v.rotation_period(3000)
    with pytest.raises(errors.Validation, match="less than or equal to 1000"):
        v.limit(1001, default=100)
    with pytest.raises(errors.Validation, match="greater than or equal to 1"):
        v.limit(0, default=100)


def test_encryption_context_cap() -> None:
    assert v.encryption_context({"k": "x" * 8191}) == {"k": "x" * 8191}
    with pytest.raises(errors.Validation, match="8192 bytes"):
        v.encryption_context({"k": "x" * 8192})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("my-key", v.ALIAS_PREFIX_MESSAGE),
        (
            "alias/bad name",
            "1 validation error detected: Value 'alias/bad name' at 'aliasName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
        ),
        ("alias/a:b", "alias/a:b contains invalid characters for an alias"),
        (
            "",
            "1 validation error detected: Value null at 'aliasName' failed to satisfy constraint: "
            "Member must not be null",
        ),
    ],
)
def test_alias_name_checks(name: str, message: str) -> None:
    with pytest.raises(errors.Validation) as info:
        v.alias_name(name)
    assert info.value.message == message
    assert v.alias_name("alias/ok_Name-1/x") == "alias/ok_Name-1/x"


def test_tags_rules() -> None:
    assert v.tags([Tag("a", ""), Tag("b", "c")]) == (Tag("a", ""), Tag("b", "c"))
    with pytest.raises(errors.TagError, match="Too many tags"):
        v.tags([Tag(f"k{i}", "v") for i in range(51)])
    with pytest.raises(errors.TagError, match="Duplicate tag keys"):
        v.tags([Tag("k", "1"), Tag("k", "2")])
    with pytest.raises(errors.TagError, match="Tags beginning with aws: are reserved"):
        v.tags([Tag("AWS:x", "1")])
    with pytest.raises(errors.Validation, match=r"at 'tags\.2\.member\.tagKey'.*less than or equal to 128"):
        v.tags([Tag("ok", "1"), Tag("k" * 129, "1")])
    with pytest.raises(errors.Validation, match=r"at 'tags\.1\.member\.tagValue'"):
        v.tags([Tag("ok", "v" * 257)])


def test_markers_are_opaque_and_checked() -> None:
    marker = v.encode_marker("keys", KID)
    assert KID not in marker
    assert v.decode_marker(marker, "keys") == KID
    assert v.decode_marker(None, "keys") is None
    for bad in ("garbage!", v.encode_marker("aliases", "alias/x"), "AAAA"):
        with pytest.raises(errors.InvalidMarker):
            v.decode_marker(bad, "keys")
    with pytest.raises(errors.Validation):
        v.decode_marker("", "keys")

"""Every bound and pattern of the Secrets Manager API model, with AWS's messages.

botocore checks only ``required`` and ``min`` client-side, and gRPC clients check nothing, so the store
enforces all of it. Constraint failures are ``ValidationException`` in AWS's wording::

    1 validation error detected: Value 'x' at 'name' failed to satisfy constraint: Member must have length
    less than or equal to 512

Sensitive members (secret values, rotation tokens) are reported without their value (``Value at
'secretString' failed ...``), as AWS does; other values are echoed through ``coffer.core.text.echo`` (control
characters escaped, long values cut), so a message stays small whatever was sent. Several failures in one
request are joined: ``2 validation errors detected: ...; ...``.

Every text member checked for its length (all but the secret value and the rotation token, which are
sensitive) is also refused when it holds a control character other than tab, line feed or carriage return
(NUL included): a ValidationException naming the member and the allowed characters.
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from coffer.core import errors
from coffer.core.text import TEXT_PATTERN, echo, has_control

INVALID_NAME_MESSAGE = (
    "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!"
)

#: Characters of a secret name a caller may choose (the API model's pattern).
NAME_RE = re.compile(r"^[A-Za-z0-9/_+=.@-]+$")
#: Names as they may appear in a SecretId: also ``!`` (service-owned ``<service>!...`` names).
SECRET_ID_NAME_RE = re.compile(r"^[A-Za-z0-9/_+=.@!-]+$")

FILTER_KEYS = ("description", "name", "tag-key", "tag-value", "primary-region", "owning-service", "all")
FILTER_VALUE_PATTERN = r"^\!?[a-zA-Z0-9 :_@\/\+\=\.\-\!]*$"
_FILTER_VALUE_RE = re.compile(FILTER_VALUE_PATTERN)
SORT_ORDERS = ("asc", "desc")
SORT_BY = ("created-date", "last-accessed-date", "last-changed-date", "name")
REGION_PATTERN = r"^([a-z]+-)+\d+$"
_REGION_RE = re.compile(REGION_PATTERN)
ROTATION_TOKEN_PATTERN = r"^[a-zA-Z0-9\-]+$"
_ROTATION_TOKEN_RE = re.compile(ROTATION_TOKEN_PATTERN)

MAX_NAME = 512
MAX_SECRET_ID = 2048
MIN_TOKEN, MAX_TOKEN = 32, 64
MAX_DESCRIPTION = 2048
MAX_KMS_KEY_ID = 2048
MAX_VALUE_BYTES = 65536
MAX_STAGE = 256
MAX_STAGES_PER_CALL = 20
MAX_TAG_KEY, MAX_TAG_VALUE = 128, 256
MAX_TYPE = 256
MAX_FILTERS = 10
MAX_FILTER_VALUES = 10
MAX_FILTER_VALUE = 512
MAX_NEXT_TOKEN = 4096
MAX_LIST_RESULTS = 100
MAX_BATCH_RESULTS = 20
MAX_BATCH_IDS = 20
MIN_ROTATION_TOKEN, MAX_ROTATION_TOKEN = 36, 256
MAX_REGION = 128


def _show(value: object) -> str:
    if isinstance(value, list | tuple):
        return echo("[" + ", ".join(str(v) for v in value) + "]")
    return echo(value)


class Checker:
    """Collects constraint failures of one request; ``done()`` raises one ValidationException for all."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    # --- primitives ------------------------------------------------------------------------------------

    def fail(self, member: str, value: object, constraint: str, *, sensitive: bool = False) -> None:
        shown = "Value" if sensitive else f"Value '{_show(value)}'"
        self.failures.append(f"{shown} at '{member}' failed to satisfy constraint: {constraint}")

    def length(
        self,
        member: str,
        value: str | bytes | Sequence[object] | None,
        *,
        min_len: int | None = None,
        max_len: int | None = None,
        sensitive: bool = False,
        measure: int | None = None,
    ) -> bool:
        """Check ``min_len <= len <= max_len`` (``measure`` overrides ``len(value)``). None is not checked."""
        if value is None:
            return True
        size = len(value) if measure is None else measure
        if max_len is not None and size > max_len:
            self.fail(
                member, value, f"Member must have length less than or equal to {max_len}", sensitive=sensitive
            )
            return False
        if min_len is not None and size < min_len:
            self.fail(
                member,
                value,
                f"Member must have length greater than or equal to {min_len}",
                sensitive=sensitive,
            )
            return False
        if isinstance(value, str) and not sensitive:
            return self.text(member, value)
        return True

    def text(self, member: str, value: str, *, shown: object = None) -> bool:
        """Refuse control characters other than tab, line feed and carriage return (see the module doc)."""
        if not has_control(value):
            return True
        self.fail(
            member,
            value if shown is None else shown,
            f"Member must satisfy regular expression pattern: {TEXT_PATTERN}",
        )
        return False

    def number(self, member: str, value: int | None, *, min_value: int, max_value: int) -> bool:
        if value is None:
            return True
        if value > max_value:
            self.fail(member, value, f"Member must have value less than or equal to {max_value}")
            return False
        if value < min_value:
            self.fail(member, value, f"Member must have value greater than or equal to {min_value}")
            return False
        return True

    def enum(self, member: str, value: str | None, allowed: Sequence[str]) -> bool:
        if value is None or value in allowed:
            return True
        self.fail(member, value, f"Member must satisfy enum value set: [{', '.join(allowed)}]")
        return False

    def pattern(
        self, member: str, value: str | None, regex: re.Pattern[str], *, sensitive: bool = False
    ) -> bool:
        if value is None or regex.match(value):
            return True
        self.fail(
            member,
            value,
            f"Member must satisfy regular expression pattern: {regex.pattern}",
            sensitive=sensitive,
        )
        return False

    def each_length(self, member: str, values: Sequence[str], *, min_len: int, max_len: int) -> bool:
        """A list whose members each have a length bound (AWS nests the constraint)."""
        if all(min_len <= len(v) <= max_len for v in values):
            return all(self.text(member, v, shown=list(values)) for v in values)
        self.fail(
            member,
            list(values),
            "Member must satisfy constraint: [Member must have length less than or equal to "
            f"{max_len}, Member must have length greater than or equal to {min_len}]",
        )
        return False

    def done(self) -> None:
        if not self.failures:
            return
        count = len(self.failures)
        noun = "error" if count == 1 else "errors"
        raise errors.Validation(f"{count} validation {noun} detected: " + "; ".join(self.failures))

    # --- members shared by several operations ----------------------------------------------------------

    def secret_id(self, value: str, member: str = "secretId") -> None:
        if (
            self.length(member, value, min_len=1, max_len=MAX_SECRET_ID)
            and not value.startswith("arn:")
            and not SECRET_ID_NAME_RE.match(value)
        ):
            raise errors.Validation(INVALID_NAME_MESSAGE)

    def name(self, value: str) -> None:
        if self.length("name", value, min_len=1, max_len=MAX_NAME) and not NAME_RE.match(value):
            raise errors.Validation(INVALID_NAME_MESSAGE)

    def token(self, value: str | None, member: str = "clientRequestToken") -> None:
        self.length(member, value, min_len=MIN_TOKEN, max_len=MAX_TOKEN)

    def version_id(self, value: str | None, member: str = "versionId") -> None:
        self.length(member, value, min_len=MIN_TOKEN, max_len=MAX_TOKEN)

    def version_stage(self, value: str | None, member: str = "versionStage") -> None:
        self.length(member, value, min_len=1, max_len=MAX_STAGE)

    def version_stages(self, values: Sequence[str] | None, member: str = "versionStages") -> None:
        if values is None:
            return
        if self.length(member, values, min_len=1, max_len=MAX_STAGES_PER_CALL):
            self.each_length(member, values, min_len=1, max_len=MAX_STAGE)

    def description(self, value: str | None) -> None:
        self.length("description", value, max_len=MAX_DESCRIPTION)

    def kms_key_id(self, value: str | None) -> None:
        self.length("kmsKeyId", value, max_len=MAX_KMS_KEY_ID)

    def type(self, value: str | None) -> None:
        self.length("type", value, max_len=MAX_TYPE)

    def secret_string(self, value: str | None) -> None:
        if value is None:
            return
        self.length(
            "secretString",
            value,
            min_len=1,
            max_len=MAX_VALUE_BYTES,
            sensitive=True,
            measure=len(value.encode("utf-8")),
        )

    def secret_binary(self, value: bytes | None) -> None:
        self.length("secretBinary", value, min_len=1, max_len=MAX_VALUE_BYTES, sensitive=True)

    def rotation_token(self, value: str | None) -> None:
        if value is None:
            return
        if self.length(
            "rotationToken", value, min_len=MIN_ROTATION_TOKEN, max_len=MAX_ROTATION_TOKEN, sensitive=True
        ):
            self.pattern("rotationToken", value, _ROTATION_TOKEN_RE, sensitive=True)

    def tags(self, tags: Sequence[tuple[str, str]], member: str = "tags") -> None:
        for i, (key, value) in enumerate(tags, start=1):
            self.length(f"{member}.{i}.member.key", key, min_len=1, max_len=MAX_TAG_KEY)
            self.length(f"{member}.{i}.member.value", value, max_len=MAX_TAG_VALUE)

    def tag_keys(self, keys: Sequence[str]) -> None:
        if self.length("tagKeys", keys, min_len=1):
            self.each_length("tagKeys", keys, min_len=1, max_len=MAX_TAG_KEY)

    def region(self, value: str, member: str) -> None:
        if self.length(member, value, min_len=1, max_len=MAX_REGION):
            self.pattern(member, value, _REGION_RE)

    def filters(self, filters: Sequence[tuple[str, Sequence[str]]], member: str = "filters") -> None:
        """Shape checks of ListSecrets/BatchGetSecretValue filters. Missing key/values are
        InvalidParameterException (raised by :func:`require_filter_parts`)."""
        self.length(member, filters, max_len=MAX_FILTERS)
        for i, (key, values) in enumerate(filters, start=1):
            if key:
                self.enum(f"{member}.{i}.member.key", key, FILTER_KEYS)
            if values and self.length(f"{member}.{i}.member.values", values, max_len=MAX_FILTER_VALUES):
                bad_len = [v for v in values if len(v) > MAX_FILTER_VALUE]
                bad_pattern = [v for v in values if not _FILTER_VALUE_RE.match(v)]
                if bad_len:
                    self.fail(
                        f"{member}.{i}.member.values",
                        list(values),
                        "Member must satisfy constraint: [Member must have length less than or equal to "
                        f"{MAX_FILTER_VALUE}]",
                    )
                elif bad_pattern:
                    self.fail(
                        f"{member}.{i}.member.values",
                        list(values),
                        "Member must satisfy constraint: [Member must satisfy regular expression pattern: "
                        f"{FILTER_VALUE_PATTERN}]",
                    )

    def next_token(self, value: str | None) -> None:
        self.length("nextToken", value, min_len=1, max_len=MAX_NEXT_TOKEN)


def require_filter_parts(filters: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Filters need a key and at least one value (InvalidParameterException, as AWS answers)."""
    for key, values in filters:
        if not key:
            raise errors.InvalidParameter("Invalid filter key")
        if not values:
            raise errors.InvalidParameter(f"Invalid filter values for key: {key}")


# --- business-rule messages (InvalidParameter / InvalidRequest) --------------------------------------------

BOTH_VALUES_MESSAGE = (
    "You can't specify both a binary secret value and a string secret value in the same secret."
)
NEED_TOKEN_MESSAGE = "You must provide a ClientRequestToken value. We recommend a UUID-type value."
NEED_VALUE_MESSAGE = "You must provide either SecretString or SecretBinary."
MARKED_FOR_DELETION_MESSAGE = (
    "You can't perform this operation on the secret because it was marked for deletion."
)
RECOVERY_WINDOW_MESSAGE = "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive)."
FORCE_AND_WINDOW_MESSAGE = (
    "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays."
)
MIN_RECOVERY_DAYS, MAX_RECOVERY_DAYS, DEFAULT_RECOVERY_DAYS = 7, 30, 30


def check_one_value(secret_string: str | None, secret_binary: bytes | None) -> None:
    if secret_string is not None and secret_binary is not None:
        raise errors.InvalidParameter(BOTH_VALUES_MESSAGE)


def check_token_present(*, has_value: bool, token: str | None) -> None:
    """A request carrying a value must carry a ClientRequestToken (SDKs always fill one in)."""
    if has_value and token is None:
        raise errors.InvalidRequest(NEED_TOKEN_MESSAGE)


def check_recovery(window_days: int | None, force: bool | None) -> None:
    """DeleteSecret's RecoveryWindowInDays must lie in 7-30 days and cannot be combined with
    ForceDeleteWithoutRecovery; AWS checks the range first, then the conflict of both parameters."""
    if window_days is not None and not MIN_RECOVERY_DAYS <= window_days <= MAX_RECOVERY_DAYS:
        raise errors.InvalidParameter(RECOVERY_WINDOW_MESSAGE)
    if window_days is not None and force:
        raise errors.InvalidParameter(FORCE_AND_WINDOW_MESSAGE)

"""Server-side shape checks with AWS's exact ValidationException wording, and opaque list
markers. Pure."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence

from coffer.core import errors
from coffer.kms.model import Tag

MAX_KEY_ID_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 8192
MAX_ALIAS_NAME_LENGTH = 256
MAX_PLAINTEXT = 4096
MAX_CIPHERTEXT = 6144
MAX_NUMBER_OF_BYTES = 1024
MAX_TAGS = 50
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
#: Our cap on one encryption context: UTF-8 bytes of all keys and values together.
MAX_ENCRYPTION_CONTEXT_BYTES = 8192
MIN_PENDING_WINDOW, MAX_PENDING_WINDOW, DEFAULT_PENDING_WINDOW = 7, 30, 30
MIN_ROTATION_PERIOD, MAX_ROTATION_PERIOD, DEFAULT_ROTATION_PERIOD = 90, 2560, 365
MIN_LIMIT, MAX_LIMIT = 1, 1000
MAX_MARKER_LENGTH = 1024

KEY_USAGES = ("ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT")
KEY_SPECS = (
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SYMMETRIC_DEFAULT",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
    "ECC_NIST_EDWARDS25519",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
)
CUSTOMER_MASTER_KEY_SPECS = KEY_SPECS[:13]
ORIGINS = ("AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE")
DATA_KEY_SPECS = {"AES_256": 32, "AES_128": 16}
ENCRYPTION_ALGORITHMS = ("SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE")

_ALIAS_PATTERN = re.compile(r"^[a-zA-Z0-9:/_-]+$")
_MARKER_PATTERN = re.compile(r"^[\u0020-\u00FF]*$")
ALIAS_PREFIX_MESSAGE = (
    'Alias must start with the prefix "alias/". Please see '
    "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"
)


def _error(value: str | None, field: str, constraint: str) -> errors.Validation:
    shown = "" if value is None else f" {value}"
    return errors.Validation(
        f"1 validation error detected: Value{shown} at '{field}' failed to satisfy constraint: "
        f"Member must {constraint}"
    )


#: Longer values are not echoed in messages (they travel in gRPC trailers, which have a size limit).
MAX_ECHOED_VALUE = 256


def _quoted(value: object) -> str | None:
    text = str(value)
    return f"'{text}'" if len(text) <= MAX_ECHOED_VALUE else None


def required(value: str, field: str) -> str:
    """A required string (proto3 cannot tell "absent" from empty: both are null here)."""
    if value == "":
        raise _error("null", field, "not be null")
    return value


def string_length(value: str, field: str, *, low: int, high: int) -> str:
    if len(value) < low:
        raise _error(_quoted(value), field, f"have length greater than or equal to {low}")
    if len(value) > high:
        raise _error(_quoted(value), field, f"have length less than or equal to {high}")
    return value


def key_id(value: str, field: str = "keyId") -> str:
    return string_length(required(value, field), field, low=1, high=MAX_KEY_ID_LENGTH)


def int_range(value: int, field: str, *, low: int, high: int) -> int:
    if value < low:
        raise _error(_quoted(value), field, f"have value greater than or equal to {low}")
    if value > high:
        raise _error(_quoted(value), field, f"have value less than or equal to {high}")
    return value


def blob_length(value: bytes, field: str, *, low: int, high: int) -> bytes:
    """Blob bounds; the value itself is never echoed (it may be sensitive)."""
    if len(value) < low:
        raise _error(None, field, f"have length greater than or equal to {low}")
    if len(value) > high:
        raise _error(None, field, f"have length less than or equal to {high}")
    return value


def enum(value: str, field: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise _error(_quoted(value), field, f"satisfy enum value set: [{', '.join(allowed)}]")
    return value


def description(value: str) -> str:
    string_length(value, "description", low=0, high=MAX_DESCRIPTION_LENGTH)
    if "\x00" in value:  # stored as PostgreSQL text, which cannot hold it
        raise _error(_quoted(value), "description", "not contain the character U+0000")
    return value


def encryption_context(context: Mapping[str, str]) -> dict[str, str]:
    total = sum(len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in context.items())
    if total > MAX_ENCRYPTION_CONTEXT_BYTES:
        raise errors.Validation(
            f"Encryption context is {total} bytes; the keys and values together must not exceed "
            f"{MAX_ENCRYPTION_CONTEXT_BYTES} bytes."
        )
    return dict(context)


def pending_window(value: int | None) -> int:
    if value is None:
        return DEFAULT_PENDING_WINDOW
    if not MIN_PENDING_WINDOW <= value <= MAX_PENDING_WINDOW:
        raise errors.Validation("PendingWindowInDays must be between 7 and 30")
    return value


def rotation_period(value: int | None) -> int:
    if value is None:
        return DEFAULT_ROTATION_PERIOD
    return int_range(value, "rotationPeriodInDays", low=MIN_ROTATION_PERIOD, high=MAX_ROTATION_PERIOD)


def limit(value: int | None, *, default: int) -> int:
    if value is None:
        return default
    return int_range(value, "limit", low=MIN_LIMIT, high=MAX_LIMIT)


def data_key_length(*, key_spec: str | None, number_of_bytes: int | None) -> int:
    """Exactly one of KeySpec and NumberOfBytes; neither or both is a ValidationException."""
    if (key_spec is None) == (number_of_bytes is None):
        raise errors.Validation("Please specify either number of bytes or key spec.")
    if key_spec is not None:
        return DATA_KEY_SPECS[enum(key_spec, "keySpec", tuple(DATA_KEY_SPECS))]
    assert number_of_bytes is not None
    return int_range(number_of_bytes, "numberOfBytes", low=1, high=MAX_NUMBER_OF_BYTES)


def encryption_algorithm(value: str | None) -> str | None:
    return None if value is None else enum(value, "encryptionAlgorithm", ENCRYPTION_ALGORITHMS)


def tags(values: Iterable[Tag]) -> tuple[Tag, ...]:
    """Shape first (lengths, 1-based member index), then the TagException rules."""
    out = tuple(values)
    for n, tag in enumerate(out, start=1):
        string_length(tag.key, f"tags.{n}.member.tagKey", low=1, high=MAX_TAG_KEY)
        string_length(tag.value, f"tags.{n}.member.tagValue", low=0, high=MAX_TAG_VALUE)
    if len(out) > MAX_TAGS:
        raise errors.TagError("Too many tags")
    if len({t.key for t in out}) != len(out):
        raise errors.TagError("Duplicate tag keys")
    if any(t.key.lower().startswith("aws:") for t in out):
        raise errors.TagError("Tags beginning with aws: are reserved")
    return out


def alias_name(value: str) -> str:
    """AliasName checks in the order AWS applies them (the ``alias/`` prefix, then pattern and length); the
    caller checks the reserved ``alias/aws/``."""
    string_length(required(value, "aliasName"), "aliasName", low=1, high=MAX_ALIAS_NAME_LENGTH)
    if not value.startswith("alias/"):
        raise errors.Validation(ALIAS_PREFIX_MESSAGE)
    if not _ALIAS_PATTERN.match(value):
        raise _error(_quoted(value), "aliasName", "satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$")
    if ":" in value:
        raise errors.Validation(f"{value} contains invalid characters for an alias")
    if value == "alias/":
        raise errors.Validation("Alias name must have at least one character after the prefix alias/")
    return value


# --- opaque list markers ---------------------------------------------------------------------------------


def encode_marker(kind: str, position: str) -> str:
    raw = f"{kind}\x1f{position}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_marker(marker: str | None, kind: str) -> str | None:
    """The position inside a marker made by ``encode_marker`` for the same list; anything else is
    InvalidMarkerException."""
    if marker is None:
        return None
    string_length(marker, "marker", low=1, high=MAX_MARKER_LENGTH)
    if not _MARKER_PATTERN.match(marker):
        raise _error(_quoted(marker), "marker", "satisfy regular expression pattern: [\\u0020-\\u00FF]*")
    try:
        raw = base64.urlsafe_b64decode(marker + "=" * (-len(marker) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        raise errors.InvalidMarker() from None
    prefix, sep, position = raw.partition("\x1f")
    if sep != "\x1f" or prefix != kind or not position:
        raise errors.InvalidMarker()
    return position

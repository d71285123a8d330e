"""Key identifiers (key id, key ARN, alias name, alias ARN): parse the four accepted forms into a canonical
reference, with the exact NotFoundException messages for malformed input. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from coffer.core import errors
from coffer.kms.model import Scope

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MRK = re.compile(r"^mrk-[0-9a-fA-F]{32}$")
_ARN = re.compile(
    r"^arn:(?P<partition>[^:]*):kms:(?P<region>[^:]*):(?P<account>[^:]*):(?P<resource>.*)$", re.S
)
ALIAS_PREFIX = "alias/"


@dataclass(frozen=True, slots=True)
class KeyIdRef:
    key_id: str


@dataclass(frozen=True, slots=True)
class AliasRef:
    alias_name: str


KeyRef = KeyIdRef | AliasRef


def is_key_id(value: str) -> bool:
    """A well-formed key ID: a UUID or ``mrk-`` followed by 32 hex characters."""
    return bool(_UUID.match(value) or _MRK.match(value))


def invalid_key_id(value: str) -> errors.KmsNotFound:
    return errors.KmsNotFound(f"Invalid keyId '{value}'")


def parse_key_ref(value: str, scope: Scope, *, allow_alias: bool) -> KeyRef:
    """Canonicalise a ``KeyId`` (key ID, key ARN, alias name, alias ARN) to a key ID or alias name.

    ``allow_alias=False`` is for the key-ID-only operations, where an alias form is malformed."""
    if is_key_id(value):
        return KeyIdRef(value.lower())
    if value.startswith(ALIAS_PREFIX):
        if not allow_alias:
            raise invalid_key_id(value)
        return AliasRef(value)
    m = _ARN.match(value)
    if m is None:
        raise invalid_key_id(value)
    if m["region"] != scope.region:
        raise errors.KmsNotFound(f"Invalid arn {m['region']}")
    foreign = m["partition"] != scope.partition or m["account"] != scope.account_id
    resource = m["resource"]
    if resource.startswith("key/") and is_key_id(resource[4:]):
        if foreign:
            raise errors.KmsNotFound(f"Key '{value}' does not exist")
        return KeyIdRef(resource[4:].lower())
    if resource.startswith(ALIAS_PREFIX) and len(resource) > len(ALIAS_PREFIX) and allow_alias:
        if foreign:
            raise errors.KmsNotFound(f"Alias {value} is not found.")
        return AliasRef(resource)
    raise invalid_key_id(value)


def is_alias_form(value: str) -> bool:
    """True for an alias name or an alias ARN (used to reject aliases where a key is required)."""
    if value.startswith(ALIAS_PREFIX):
        return True
    m = _ARN.match(value)
    return m is not None and m["resource"].startswith(ALIAS_PREFIX)

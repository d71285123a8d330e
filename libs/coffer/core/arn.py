"""Secret ARNs and SecretId resolution. Pure: randomness comes in as an argument.

ARN: ``arn:<partition>:secretsmanager:<region>:<account>:secret:<name>-<6 random alphanumerics>``.
A fresh suffix is minted on every creation, so a re-created name gets a new ARN.

A ``SecretId`` is one of (AWS's rules, aws-secrets-manager.md §3):

1. an ARN whose resource part ends in ``-`` + 6 alphanumerics - a full ARN, matched exactly and only
   exactly (it must name this service's partition and region; its account is the owner's);
2. any other ARN of this service - a partial ARN, matched by the resource part as a name;
3. anything else - a name, looked up in the caller's account.

A name may itself end in ``-`` + 6 alphanumerics (``db-abcdef``). By name it resolves like any other; its
partial ARN (``...:secret:db-abcdef``) reads as a full ARN and, as in AWS, answers ResourceNotFoundException:
there is no fallback to a name lookup (AWS recommends full ARNs for such names). That also keeps a purged
secret's ARN from ever reaching a secret re-created under a name that happens to spell it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass

from coffer.core.model import Arn

SUFFIX_ALPHABET = string.ascii_letters + string.digits
SUFFIX_LENGTH = 6

_ARN_RE = re.compile(
    r"^arn:(?P<partition>[^:]+):secretsmanager:(?P<region>[^:]*):(?P<account>[^:]*):secret:(?P<resource>.+)$"
)
_SUFFIXED_RE = re.compile(r"^(?P<name>.+)-(?P<suffix>[A-Za-z0-9]{6})$")


def new_suffix(randbelow: Callable[[int], int]) -> str:
    """Six characters drawn uniformly from letters and digits (``randbelow`` = ``secrets.randbelow``)."""
    return "".join(SUFFIX_ALPHABET[randbelow(len(SUFFIX_ALPHABET))] for _ in range(SUFFIX_LENGTH))


def make_arn(*, partition: str, region: str, account: str, name: str, suffix: str) -> Arn:
    return Arn(partition=partition, region=region, account=account, name=name, suffix=suffix)


def parse_arn(text: str) -> Arn | None:
    """A full secret ARN, or None (not an ARN, or one without the 6-character suffix)."""
    m = _ARN_RE.match(text)
    if m is None:
        return None
    s = _SUFFIXED_RE.match(m["resource"])
    if s is None:
        return None
    return Arn(
        partition=m["partition"], region=m["region"], account=m["account"], name=s["name"], suffix=s["suffix"]
    )


def partial_arn(*, partition: str, region: str, account: str, name: str) -> str:
    """The ARN without its random suffix (how a caller may refer to a secret by name)."""
    return f"arn:{partition}:secretsmanager:{region}:{account}:secret:{name}"


@dataclass(frozen=True, slots=True)
class SecretRef:
    """How to look a SecretId up: by exact ARN when ``arn`` is given (and only so), else by name in
    ``account``. ``name`` is the resource part as given (for a full ARN it includes the suffix)."""

    arn: str | None
    name: str
    account: str = "000000000000"

    @property
    def name_key(self) -> list[str] | None:
        """The (account, name) pair the name lookup matches (``LOOKUP``'s second parameter); None for a full
        ARN, which matches its ARN alone."""
        if self.arn is not None:
            return None
        return [self.account, self.name]


def resolve_secret_id(secret_id: str, *, partition: str, region: str, account: str) -> SecretRef | None:
    """Turn a SecretId into a lookup, or None when it can name nothing here (another region or partition, or
    not a Secrets Manager ARN) - callers answer ResourceNotFoundException.

    ``account`` is the caller's: a name resolves there. An ARN resolves in the account it names (another
    account's full ARN is a cross-account request, which the policies decide); a partial ARN of another
    account resolves by name in that account."""
    if not secret_id.startswith("arn:"):
        return SecretRef(arn=None, name=secret_id, account=account)
    m = _ARN_RE.match(secret_id)
    if m is None:
        return None
    if (m["partition"], m["region"]) != (partition, region):
        return None
    resource = m["resource"]
    owner = m["account"]
    if _SUFFIXED_RE.match(resource):
        return SecretRef(arn=secret_id, name=resource, account=owner)
    return SecretRef(arn=None, name=resource, account=owner)

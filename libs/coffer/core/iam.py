"""IAM, STS and Organizations rules that need no I/O: name and input validation with IAM's messages, ARNs,
unique ids, AssumeRole's duration and session-name bounds, and the AssumeRole decision over the policy
engine (identity policies of the caller and the role's trust policy).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coffer.core import errors
from coffer.core.authorize import decide
from coffer.core.policy import Policy, PolicyKind, parse_policy
from coffer.core.policy.evaluate import Match, statement_applies
from coffer.core.principal import Principal

#: IAM's name rule for users, roles and policy names.
NAME_RE = re.compile(r"[\w+=,.@-]{1,64}")
ROLE_NAME_MAX = 64
USER_NAME_MAX = 64
POLICY_NAME_MAX = 128
SESSION_NAME_RE = re.compile(r"[\w+=,.@-]{2,64}")
PATH_RE = re.compile(r"/|/[\x21-\x7e]*/")
PATH_PREFIX_RE = re.compile(r"/[\x21-\x7f]*")
ACCESS_KEY_ID_RE = re.compile(r"\w{16,128}", flags=re.ASCII)
ACCOUNT_NAME_MAX = 50
EMAIL_RE = re.compile(r"[^\s@]{1,64}@[^\s@]{1,255}")

MAX_ACCESS_KEYS_PER_USER = 2
MAX_TAGS = 50
TAG_KEY_RE = re.compile(r"[\w\s.:/=+\-@]{1,128}")
TAG_VALUE_RE = re.compile(r"[\w\s.:/=+\-@]{0,256}")

SESSION_MIN_SECONDS = 900
SESSION_MAX_SECONDS = 43200
SESSION_DEFAULT_SECONDS = 3600
ROLE_MAX_SESSION_DEFAULT = 3600

#: IAM's size quotas (characters other than whitespace).
USER_POLICY_MAX = 2048
ROLE_POLICY_MAX = 10240
TRUST_POLICY_MAX = 2048

MAX_ITEMS_DEFAULT = 100
MAX_ITEMS_LIMIT = 1000

ACCESS_KEY_STATUSES = ("Active", "Inactive")

_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _invalid(field: str, value: str, constraint: str) -> errors.IamValidation:
    return errors.IamValidation(
        f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: "
        f"{constraint}"
    )


def check_name(value: str, field: str = "userName", max_len: int = 64) -> str:
    """A user, role or policy name: ``[\\w+=,.@-]`` characters, 1..max_len of them (IAM's rule)."""
    if not value or len(value) > max_len:
        raise _invalid(
            field, value, f"Member must have length less than or equal to {max_len} and greater than 0"
        )
    if not re.fullmatch(r"[\w+=,.@-]+", value, flags=re.ASCII):
        raise _invalid(field, value, r"Member must satisfy regular expression pattern: [\w+=,.@-]+")
    return value


def check_path(value: str | None) -> str:
    if value is None or value == "":
        return "/"
    if len(value) > 512 or not PATH_RE.fullmatch(value):
        raise _invalid(
            "path",
            value,
            r"Member must satisfy regular expression pattern: (\u002F)|(\u002F[\u0021-\u007E]+\u002F)",
        )
    return value


def check_path_prefix(value: str | None) -> str:
    """A listing's PathPrefix (IAM's rule: 1..512 characters, ``/`` then printable ASCII); none → ``/``."""
    if value is None or value == "":
        return "/"
    if len(value) > 512 or not PATH_PREFIX_RE.fullmatch(value):
        raise _invalid(
            "pathPrefix", value, r"Member must satisfy regular expression pattern: \u002F[\u0021-\u007F]*"
        )
    return value


def check_access_key_id(value: str) -> str:
    """An access key id named in a request (IAM's rule: 16..128 word characters)."""
    if not ACCESS_KEY_ID_RE.fullmatch(value):
        raise _invalid(
            "accessKeyId",
            value,
            r"Member must have length between 16 and 128 and satisfy regular expression pattern: [\w]+",
        )
    return value


def check_session_name(value: str) -> str:
    if not SESSION_NAME_RE.fullmatch(value) or not value.isascii():
        raise _invalid(
            "roleSessionName",
            value,
            r"Member must have length between 2 and 64 and satisfy regular expression pattern: [\w+=,.@-]*",
        )
    return value


def check_tags(tags: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Tags as a dict; IAM's limits (50 tags, key 1..128, value 0..256, no ``aws:`` keys, no duplicate
    key)."""
    if len(tags) > MAX_TAGS:
        raise errors.IamLimitExceeded(f"Cannot exceed quota for TagsPerUser: {MAX_TAGS}.")
    out: dict[str, str] = {}
    for key, value in tags:
        if not TAG_KEY_RE.fullmatch(key):
            raise _invalid(
                "tags.member.key",
                key,
                r"Member must have length between 1 and 128 and satisfy regular expression pattern: "
                r"[\p{L}\p{Z}\p{N}_.:/=+\-@]+",
            )
        if not TAG_VALUE_RE.fullmatch(value):
            raise _invalid(
                "tags.member.value",
                value,
                r"Member must have length less than or equal to 256 and satisfy regular expression pattern: "
                r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*",
            )
        if key.lower().startswith("aws:"):
            raise errors.InvalidParameter(
                "User and role tag keys cannot start with the prefix aws:", code="InvalidInput"
            )
        if key.lower() in (k.lower() for k in out):
            raise errors.InvalidParameter(
                f"Duplicate tag keys found. Please note that Tag keys are case insensitive: {key}",
                code="InvalidInput",
            )
        out[key] = value
    return out


def merge_tags(current: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str]:
    """TagUser/TagRole: a key already present (case-insensitively) takes the new value and spelling."""
    out = {k: v for k, v in current.items() if k.lower() not in {n.lower() for n in new}}
    out.update(new)
    if len(out) > MAX_TAGS:
        raise errors.IamLimitExceeded(f"Cannot exceed quota for TagsPerUser: {MAX_TAGS}.")
    return out


def remove_tags(current: Mapping[str, str], keys: Sequence[str]) -> dict[str, str]:
    drop = {k.lower() for k in keys}
    return {k: v for k, v in current.items() if k.lower() not in drop}


def check_max_items(value: int | None) -> int:
    if value is None:
        return MAX_ITEMS_DEFAULT
    if not 1 <= value <= MAX_ITEMS_LIMIT:
        raise _invalid(
            "maxItems", str(value), f"Member must have value less than or equal to {MAX_ITEMS_LIMIT}"
        )
    return value


def check_max_session(value: int | None) -> int:
    if value is None:
        return ROLE_MAX_SESSION_DEFAULT
    if not SESSION_MIN_SECONDS <= value <= SESSION_MAX_SECONDS:
        raise _invalid(
            "maxSessionDuration",
            str(value),
            f"Member must have value less than or equal to {SESSION_MAX_SECONDS}"
            if value > SESSION_MAX_SECONDS
            else f"Member must have value greater than or equal to {SESSION_MIN_SECONDS}",
        )
    return value


def session_duration(requested: int | None, role_max: int) -> int:
    """AssumeRole's DurationSeconds: 900..the role's MaxSessionDuration, default 3600 (capped by the role)."""
    if requested is None:
        return min(SESSION_DEFAULT_SECONDS, role_max)
    if requested < SESSION_MIN_SECONDS:
        raise _invalid(
            "durationSeconds",
            str(requested),
            f"Member must have value greater than or equal to {SESSION_MIN_SECONDS}",
        )
    if requested > role_max:
        raise errors.IamValidation(
            f"The requested DurationSeconds exceeds the MaxSessionDuration set for this role ({role_max})."
        )
    return requested


def check_access_key_status(value: str) -> str:
    if value not in ACCESS_KEY_STATUSES:
        raise _invalid("status", value, "Member must satisfy enum value set: [Active, Inactive]")
    return value


def iam_size(text: str) -> int:
    """How IAM counts a document against its size quotas: characters other than whitespace."""
    return sum(1 for ch in text if not ch.isspace())


def identity_policy(text: str, name: str, *, max_size: int) -> Policy:
    """An inline identity policy as PutUserPolicy/PutRolePolicy accept it (MalformedPolicyDocument)."""
    if not text:
        raise _invalid("policyDocument", "", "Member must have length greater than or equal to 1")
    policy = parse_policy(text, PolicyKind.IDENTITY, require_current=True, name=name)
    if iam_size(text) > max_size:
        raise errors.IamLimitExceeded(
            f"Maximum policy size of {max_size} bytes exceeded for the policy {name}."
        )
    return policy


def trust_policy(text: str) -> Policy:
    """A role's AssumeRolePolicyDocument (MalformedPolicyDocument)."""
    if not text:
        raise _invalid("assumeRolePolicyDocument", "", "Member must have length greater than or equal to 1")
    policy = parse_policy(text, PolicyKind.TRUST, name="AssumeRolePolicyDocument")
    if iam_size(text) > TRUST_POLICY_MAX:
        raise errors.IamLimitExceeded(f"Cannot exceed quota for ACLSizePerRole: {TRUST_POLICY_MAX}")
    return policy


def user_arn(account: str, name: str, path: str = "/") -> str:
    return f"arn:aws:iam::{account}:user{path}{name}"


def role_arn(account: str, name: str, path: str = "/") -> str:
    return f"arn:aws:iam::{account}:role{path}{name}"


def session_arn(account: str, role: str, session: str) -> str:
    return f"arn:aws:sts::{account}:assumed-role/{role}/{session}"


def account_arn(account: str) -> str:
    return f"arn:aws:organizations::{ROOT_ORG_ACCOUNT}:account/o-coffer/{account}"


ROOT_ORG_ACCOUNT = "000000000000"


def new_unique_id(prefix: str) -> str:
    """``AIDA…`` (users) / ``AROA…`` (roles): the prefix and 17 characters, like IAM's ids."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(17))


def new_account_id() -> str:
    """A random 12-digit account id, never the root account's."""
    while True:
        candidate = f"{secrets.randbelow(10**12):012d}"
        if candidate != ROOT_ORG_ACCOUNT:
            return candidate


@dataclass(frozen=True, slots=True)
class RoleRef:
    """The parts of a role ARN AssumeRole needs."""

    account: str
    name: str
    arn: str


def parse_role_arn(value: str) -> RoleRef:
    parts = value.split(":", 5)
    if (
        len(value) < 20
        or len(parts) != 6
        or parts[0] != "arn"
        or parts[2] != "iam"
        or not re.fullmatch(r"[0-9]{12}", parts[4])
        or not parts[5].startswith("role/")
    ):
        raise _invalid(
            "roleArn", value, "Member must be the ARN of an IAM role (arn:aws:iam::<account>:role/<name>)"
        )
    name = parts[5].rsplit("/", 1)[-1]
    check_name(name, "roleArn")
    return RoleRef(account=parts[4], name=name, arn=value)


def may_assume(caller: Principal, role: RoleRef, trust: Policy) -> None:
    """Raise AccessDenied unless ``caller`` may assume ``role``: the role's trust policy must allow the caller
    (a statement naming it directly, or its account), and the decision over the caller's identity policies
    and the trust policy as the role's resource policy must allow ``sts:AssumeRole`` (so a trust policy that
    names only the account delegates to the caller's identity policies, and across accounts both sides are
    needed), as AWS decides it."""
    action = "sts:AssumeRole"
    decision = decide(caller, action, role.arn, resource_account=role.account, resource_policy=trust)
    ctx = caller.request_context(action, role.arn, resource_account=role.account)
    trusted = any(st.allow and statement_applies(st, ctx) is not Match.NONE for st in trust.statements)
    if decision.allowed and trusted:
        return
    raise errors.AccessDenied(
        f"User: {caller.arn} is not authorized to perform: {action} on resource: {role.arn}"
    )

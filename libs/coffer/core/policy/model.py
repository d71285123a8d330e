"""Compiled (immutable) policy documents, the request context and the malformed-document error. Pure."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coffer.core.errors import InvalidParameter
from coffer.core.policy.glob import Glob

#: The exception text Secrets Manager gives for any syntax problem in a resource policy.
SM_INVALID_SYNTAX = "This policy has invalid syntax."
#: ... and for a principal it cannot resolve or does not support.
SM_UNSUPPORTED_PRINCIPAL = "This resource policy contains an unsupported principal"


class PolicyKind(enum.Enum):
    IDENTITY = "identity"  # attached to a user or role; no Principal
    RESOURCE = "resource"  # a secret's resource policy; exactly one of Principal / NotPrincipal
    # A role's trust policy (AssumeRolePolicyDocument): a resource policy of the role, exactly one of
    # Principal / NotPrincipal, no Resource (the role itself); IAM's error code and wording.
    TRUST = "trust"


class MalformedPolicy(InvalidParameter):
    """A policy document that breaks the grammar.

    ``detail`` is the precise reason (IAM's wording where IAM has one). For an identity policy it is also the
    message (IAM answers ``MalformedPolicyDocument`` with it); Secrets Manager answers a resource policy with
    only two texts: a generic syntax error, or the unsupported-principal one.
    """

    default_code = "MalformedPolicyDocumentException"
    default_message = SM_INVALID_SYNTAX

    def __init__(
        self, detail: str, *, kind: PolicyKind = PolicyKind.RESOURCE, principal: bool = False
    ) -> None:
        self.detail = detail
        self.kind = kind
        self.principal = principal
        if kind in (PolicyKind.IDENTITY, PolicyKind.TRUST):
            super().__init__(detail, code="MalformedPolicyDocument")
        else:
            super().__init__(SM_UNSUPPORTED_PRINCIPAL if principal else SM_INVALID_SYNTAX)


class PublicPolicy(InvalidParameter):
    """PutResourcePolicy with BlockPublicPolicy=true and a policy granting broad access."""

    default_code = "PublicPolicyException"
    default_message = (
        "The BlockPublicPolicy parameter is set to true, and the resource policy did not prevent "
        "broad access to the secret."
    )


class EvaluationError(Exception):
    """Something went wrong while evaluating (a type error in a comparison, an ambiguous key): the decision is
    a deny, never an allow."""


# --- policy variables -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Var:
    """``${key}`` or ``${key, 'default'}``; ``key`` is lower-cased (key names are case-insensitive)."""

    key: str
    default: str | None = None


# A template is a sequence of: literal text (str), a wildcard token (glob.STAR / glob.QMARK) or a Var.
Template = tuple[Any, ...]


# --- compiled documents -----------------------------------------------------------------------------------


class Family(enum.Enum):
    STRING = "String"
    STRING_FOLD = "StringIgnoreCase"
    STRING_LIKE = "StringLike"
    NUMERIC = "Numeric"
    DATE = "Date"
    BOOL = "Bool"
    BINARY = "Binary"
    IP = "IpAddress"
    ARN = "Arn"
    NULL = "Null"


class Qualifier(enum.Enum):
    NONE = ""
    ALL = "ForAllValues"
    ANY = "ForAnyValue"


class Compare(enum.Enum):
    EQ = "eq"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"


@dataclass(frozen=True, slots=True)
class Condition:
    operator: str  # as written (for messages)
    family: Family
    compare: Compare
    negated: bool
    if_exists: bool
    qualifier: Qualifier
    key: str  # lower-cased
    key_as_written: str
    # Typed literals: str | Decimal | datetime | bytes | ip_network | Glob | list of ARN-part Globs, or, when
    # the literal holds a variable, a Template resolved per request.
    values: tuple[Any, ...]
    has_vars: bool
    raw: tuple[str, ...] = ()  # the values as written (canonical text), for the broad-access analysis


@dataclass(frozen=True, slots=True)
class ArnPattern:
    """A Resource entry: ``*`` (``parts`` None) or an ARN split into six parts, each a Glob; the sixth part
    may be a Template when it holds variables."""

    text: str
    parts: tuple[Glob, ...] | None
    tail: Template | None = None  # the resource part, when it holds variables


class PrincipalForm(enum.Enum):
    ANY = "*"
    ACCOUNT = "account"
    USER = "user"
    ROLE = "role"
    SESSION = "session"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class PrincipalEntry:
    form: PrincipalForm
    value: str  # canonical ARN (root ARN for accounts), service name, or "*"
    account: str = ""


@dataclass(frozen=True, slots=True)
class Statement:
    index: int
    sid: str | None
    allow: bool
    not_action: bool
    actions: tuple[Glob, ...]
    not_resource: bool
    resources: tuple[ArnPattern, ...]
    not_principal: bool
    principals: tuple[PrincipalEntry, ...] | None  # None in identity policies
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    kind: PolicyKind
    version: str | None
    statements: tuple[Statement, ...]
    text: str = field(repr=False, compare=False)
    name: str = ""

    @property
    def variables(self) -> bool:
        return self.version == "2012-10-17"


# --- the request ------------------------------------------------------------------------------------------


def role_arn_of_session(arn: str) -> str | None:
    """``arn:P:sts::A:assumed-role/R/S`` -> ``arn:P:iam::A:role/R``; None for anything else."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sts" or not parts[5].startswith("assumed-role/"):
        return None
    pieces = parts[5].split("/")
    if len(pieces) < 3:
        return None
    return f"arn:{parts[1]}:iam::{parts[4]}:role/{pieces[1]}"


def principal_type(arn: str) -> str:
    parts = arn.split(":", 5)
    if len(parts) != 6:
        return "Anonymous"
    res = parts[5]
    if parts[2] == "iam" and res == "root":
        return "Account"
    if parts[2] == "iam" and res.startswith("user/"):
        return "User"
    if parts[2] == "sts" and res.startswith("assumed-role/"):
        return "AssumedRole"
    if parts[2] == "sts" and res.startswith("federated-user/"):
        return "FederatedUser"
    if parts[2] == "iam" and res.startswith("role/"):
        return "Role"
    return "Anonymous"


@dataclass(frozen=True, slots=True, eq=False)
class RequestContext:
    """Everything a decision may look at, built once per request.

    ``resource`` is the secret's full ARN, the SecretId exactly as supplied when no secret was found, or ``*``
    for actions without a resource. ``keys`` maps condition-key names to value lists (one value for a
    single-valued key; an empty list means absent). Key lookup is case-insensitive. The principal keys
    (``aws:PrincipalArn``, ``aws:PrincipalAccount``, ``aws:PrincipalType``, ``aws:PrincipalTag/*``,
    ``aws:username``, ``aws:ResourceAccount``) are derived from the other fields unless ``keys`` gives them.
    """

    principal_arn: str
    principal_account: str
    action: str
    resource: str = "*"
    resource_account: str | None = None
    principal_tags: Mapping[str, str] = field(default_factory=dict)
    keys: Mapping[str, Sequence[str]] = field(default_factory=dict)
    role_arn: str | None = None  # the role of a session; derived from a session ARN when omitted
    service: str | None = None  # set when the caller is a service principal (e.g. "rotation.coffer")
    action_folded: str = field(init=False, repr=False)
    resource_parts: tuple[str, ...] | None = field(init=False, repr=False)  # the six ARN parts, if an ARN
    _table: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "action_folded", self.action.casefold())
        rparts = tuple(self.resource.split(":", 5))
        object.__setattr__(self, "resource_parts", rparts if len(rparts) == 6 else None)
        if self.role_arn is None:
            object.__setattr__(self, "role_arn", role_arn_of_session(self.principal_arn))
        table: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for k, vs in self.keys.items():
            table.setdefault(k.casefold(), []).append((k, tuple(vs)))
        derived: list[tuple[str, tuple[str, ...]]] = [
            ("aws:PrincipalArn", (self.role_arn or self.principal_arn,)),
            ("aws:PrincipalAccount", (self.principal_account,)),
            ("aws:PrincipalType", (principal_type(self.principal_arn),)),
        ]
        res = self.principal_arn.split(":", 5)
        if len(res) == 6 and res[2] == "iam" and res[5].startswith("user/"):
            derived.append(("aws:username", (res[5].rsplit("/", 1)[-1],)))
        if self.resource_account is not None:
            derived.append(("aws:ResourceAccount", (self.resource_account,)))
        tag_keys: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for tk, tv in self.principal_tags.items():
            name = f"aws:PrincipalTag/{tk}"
            tag_keys.setdefault(name.casefold(), []).append((name, (tv,)))
        for name, vs in derived:
            table.setdefault(name.casefold(), [(name, vs)])
        for folded, entries in tag_keys.items():
            table.setdefault(folded, entries)
        object.__setattr__(self, "_table", {k: tuple(v) for k, v in table.items()})

    @property
    def resource_less(self) -> bool:
        return self.resource == "*"

    def lookup(self, key: str, as_written: str = "") -> tuple[str, ...]:
        """The values of a key (``key`` already lower-cased); ``()`` when absent.

        When the context holds several keys differing only in case (tags ``team`` and ``Team``) and none is
        spelled exactly as the policy spells it, the answer is unpredictable on AWS: an evaluation error here.
        """
        entries = self._table.get(key)
        if not entries:
            return ()
        if len(entries) == 1:
            return entries[0][1]
        for name, vs in entries:
            if name == as_written:
                return vs
        raise EvaluationError(f"condition key {as_written or key} is ambiguous in this request")

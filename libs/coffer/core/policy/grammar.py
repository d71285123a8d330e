"""Parsing and validating policy documents into compiled, immutable ``Policy`` objects. Pure.

The rules, in short (every violation raises ``MalformedPolicy``):

- strict JSON: no duplicate member in any object, no NaN/Infinity; the top level is an object;
- top-level members: ``Version`` (``2012-10-17`` or ``2008-10-17``, or absent), ``Id`` (a string, ignored),
  ``Statement`` (one object or a non-empty array of objects); nothing else, names case-sensitive;
- statement members: ``Sid``, ``Effect``, ``Principal``/``NotPrincipal``, ``Action``/``NotAction``,
  ``Resource``/``NotResource``, ``Condition``; nothing else;
- ``Effect`` is exactly ``Allow`` or ``Deny``;
- exactly one of Action/NotAction and one of Resource/NotResource, each a string or a non-empty array of
  strings;
- an identity policy names no principal; a resource policy names exactly one of Principal/NotPrincipal, and
  NotPrincipal only in a Deny;
- Sids are unique within the document (the empty Sid is not counted); in identity policies only letters and
  digits;
- policy variables (``${...}``) exist only under Version 2012-10-17, and only in the resource part of a
  Resource ARN and in String, ARN and Bool condition values; a multivalued key cannot be a variable.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from coffer.core.policy.glob import QMARK, STAR, Glob, has_wildcard
from coffer.core.policy.model import (
    ArnPattern,
    Compare,
    Condition,
    Family,
    MalformedPolicy,
    Policy,
    PolicyKind,
    PrincipalEntry,
    PrincipalForm,
    Qualifier,
    Statement,
    Template,
    Var,
)

VERSIONS = ("2012-10-17", "2008-10-17")
CURRENT = "2012-10-17"
_TOP = frozenset({"Version", "Id", "Statement"})
_STMT = frozenset(
    {
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    }
)
_SID_IDENTITY = re.compile(r"[0-9A-Za-z]*")
_VENDOR = re.compile(r"[A-Za-z0-9.-]+")
_ACCOUNT = re.compile(r"[0-9]{12}")
_IAM_BAD_CHAR = re.compile(r"[^\t\n\r\u0020-\u00ff]")
#: Keys holding several values; they cannot be policy variables.
MULTIVALUED_KEYS = frozenset(
    {"aws:tagkeys", "secretsmanager:addreplicaregions", "aws:calledvia", "aws:principalorgpaths"}
)

# operator name (lower-cased, without qualifier and IfExists) -> (family, comparison, negated)
_OPERATORS: dict[str, tuple[Family, Compare, bool]] = {
    "stringequals": (Family.STRING, Compare.EQ, False),
    "stringnotequals": (Family.STRING, Compare.EQ, True),
    "stringequalsignorecase": (Family.STRING_FOLD, Compare.EQ, False),
    "stringnotequalsignorecase": (Family.STRING_FOLD, Compare.EQ, True),
    "stringlike": (Family.STRING_LIKE, Compare.EQ, False),
    "stringnotlike": (Family.STRING_LIKE, Compare.EQ, True),
    "numericequals": (Family.NUMERIC, Compare.EQ, False),
    "numericnotequals": (Family.NUMERIC, Compare.EQ, True),
    "numericlessthan": (Family.NUMERIC, Compare.LT, False),
    "numericlessthanequals": (Family.NUMERIC, Compare.LE, False),
    "numericgreaterthan": (Family.NUMERIC, Compare.GT, False),
    "numericgreaterthanequals": (Family.NUMERIC, Compare.GE, False),
    "dateequals": (Family.DATE, Compare.EQ, False),
    "datenotequals": (Family.DATE, Compare.EQ, True),
    "datelessthan": (Family.DATE, Compare.LT, False),
    "datelessthanequals": (Family.DATE, Compare.LE, False),
    "dategreaterthan": (Family.DATE, Compare.GT, False),
    "dategreaterthanequals": (Family.DATE, Compare.GE, False),
    "bool": (Family.BOOL, Compare.EQ, False),
    "binaryequals": (Family.BINARY, Compare.EQ, False),
    "ipaddress": (Family.IP, Compare.EQ, False),
    "notipaddress": (Family.IP, Compare.EQ, True),
    "arnequals": (Family.ARN, Compare.EQ, False),
    "arnlike": (Family.ARN, Compare.EQ, False),
    "arnnotequals": (Family.ARN, Compare.EQ, True),
    "arnnotlike": (Family.ARN, Compare.EQ, True),
    "null": (Family.NULL, Compare.EQ, False),
}
_VARIABLE_FAMILIES = frozenset(
    {Family.STRING, Family.STRING_FOLD, Family.STRING_LIKE, Family.ARN, Family.BOOL}
)

# IAM's own texts, where IAM has one.
MSG_VENDOR = "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc."
MSG_ONE_COLON = "Actions/Condition can contain only one colon."
MSG_NO_RESOURCES = "Policy statement must contain resources."
MSG_NO_ACTIONS = "Policy statement must contain actions."
MSG_PRINCIPAL_IN_IDENTITY = "Policy document should not specify a principal."
MSG_SID = (
    "Statement IDs (SID) must be alpha-numeric. "
    "Check that your input satisfies the regular expression [0-9A-Za-z]*"
)
MSG_RESOURCE_VENDOR = "Resource vendor must be fully qualified and cannot contain regexes."
MSG_TRUST_RESOURCE = "Has prohibited field Resource"
MSG_VERSION_CURRENT = "Policy document must be version 2012-10-17 or greater."


class _Num(str):
    """A JSON number, kept in its JSON spelling (so it is never mistaken for a JSON string)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate member {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(text: str) -> Any:
    """Strict JSON: a member twice in one object is an error (``json.loads`` would keep the last)."""
    return json.loads(
        text,
        object_pairs_hook=_no_duplicates,
        parse_int=_Num,
        parse_float=_Num,
        parse_constant=_reject_constant,
    )


def _is_str(x: Any) -> bool:
    return isinstance(x, str) and not isinstance(x, _Num)


def _variable_before_resource_part(text: str) -> bool:
    """Does a ``${`` start before the fifth colon (colons inside a variable not counted)?"""
    colons = 0
    i = 0
    while i < len(text) and colons < 5:
        if text.startswith("${", i):
            return True
        if text[i] == ":":
            colons += 1
        i += 1
    return False


class _Parser:
    def __init__(self, kind: PolicyKind) -> None:
        self.kind = kind
        self.variables = False

    def fail(self, detail: str, *, principal: bool = False) -> MalformedPolicy:
        return MalformedPolicy(detail, kind=self.kind, principal=principal)

    # -- templates ----------------------------------------------------------------------------------------

    def template(self, text: str, *, wildcards: bool, variables: bool, where: str) -> Template:
        """Split text into literal runs, wildcard tokens (when ``wildcards``) and variables.

        Variables are recognised only under 2012-10-17; anywhere they are not allowed a ``${`` is an
        error then.
        ``${*}``, ``${?}`` and ``${$}`` are escapes producing a literal character.
        """
        out: list[Any] = []
        run: list[str] = []

        def flush() -> None:
            if run:
                out.append("".join(run))
                run.clear()

        i = 0
        n = len(text)
        while i < n:
            ch = text[i]
            if self.variables and ch == "$" and text.startswith("${", i):
                end = text.find("}", i + 2)
                if end < 0:
                    raise self.fail(f"Invalid policy variable in {where}: {text}")
                inner = text[i + 2 : end].strip()
                if inner in ("*", "?", "$"):
                    run.append(inner)
                    i = end + 1
                    continue
                if not variables:
                    raise self.fail(f"Policy variables are not allowed in {where}: {text}")
                flush()
                out.append(self.variable(inner, text))
                i = end + 1
                continue
            if wildcards and ch in "*?":
                flush()
                out.append(STAR if ch == "*" else QMARK)
            else:
                run.append(ch)
            i += 1
        flush()
        return tuple(out)

    def variable(self, inner: str, text: str) -> Var:
        default: str | None = None
        key = inner
        if "," in inner:
            key, rest = inner.split(",", 1)
            key = key.strip()
            rest = rest.strip()
            if len(rest) < 2 or rest[0] != "'" or rest[-1] != "'":
                raise self.fail(f"Invalid default value for a policy variable: {text}")
            default = rest[1:-1]
        if not key or ":" not in key:
            raise self.fail(f"Invalid policy variable: {text}")
        folded = key.casefold()
        if folded in MULTIVALUED_KEYS:
            raise self.fail(f"The multivalued key {key} cannot be a policy variable.")
        return Var(folded, default)

    # -- document -----------------------------------------------------------------------------------------

    def document(self, text: str, *, require_current: bool, name: str) -> Policy:
        # IAM documents may hold only TAB, LF, CR and U+0020 to U+00FF.
        if self.kind in (PolicyKind.IDENTITY, PolicyKind.TRUST):
            bad = _IAM_BAD_CHAR.search(text)
            if bad is not None:
                raise self.fail(
                    f"The policy contains the character U+{ord(bad.group()):04X}, which is not allowed."
                )
        try:
            doc = load_json(text)
        except (ValueError, RecursionError) as e:
            raise self.fail(f"The policy is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise self.fail("The policy must be a JSON object.")
        for k in doc:
            if k not in _TOP:
                raise self.fail(f"Unknown element {k} in the policy.")
        version = doc.get("Version")
        if version is not None and (not _is_str(version) or version not in VERSIONS):
            raise self.fail(f"The policy version {version} is not valid.")
        if require_current and version != CURRENT:
            raise self.fail(MSG_VERSION_CURRENT)
        if "Id" in doc and not _is_str(doc["Id"]):
            raise self.fail("Id must be a string.")
        self.variables = version == CURRENT
        if "Statement" not in doc:
            raise self.fail("The policy must contain a Statement.")
        raw = doc["Statement"]
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise self.fail("Statement must be an object or a non-empty array of objects.")
        sids: set[str] = set()
        statements: list[Statement] = []
        for index, st in enumerate(raw):
            if not isinstance(st, dict):
                raise self.fail(f"Statement {index} is not an object.")
            statements.append(self.statement(index, st, sids))
        return Policy(kind=self.kind, version=version, statements=tuple(statements), text=text, name=name)

    def strings(self, value: Any, element: str) -> list[str]:
        """A string or a non-empty array of strings."""
        if _is_str(value):
            return [value]
        if isinstance(value, list) and value and all(_is_str(v) for v in value):
            return list(value)
        raise self.fail(f"{element} must be a string or a non-empty array of strings.")

    def statement(self, index: int, st: dict[str, Any], sids: set[str]) -> Statement:
        for k in st:
            if k not in _STMT:
                raise self.fail(f"Unknown element {k} in statement {index}.")
        sid: str | None = None
        if "Sid" in st:
            if not _is_str(st["Sid"]):
                raise self.fail("Sid must be a string.")
            sid = st["Sid"]
            assert sid is not None
            if self.kind is PolicyKind.IDENTITY and not _SID_IDENTITY.fullmatch(sid):
                raise self.fail(MSG_SID)
            if sid:
                if sid in sids:
                    raise self.fail(f"Statement IDs (SID) in a single policy must be unique: {sid}")
                sids.add(sid)
        effect = st.get("Effect")
        if effect not in ("Allow", "Deny") or not _is_str(effect):
            raise self.fail(
                f"Invalid effect: {effect}" if effect is not None else "Missing required field Effect."
            )
        allow = effect == "Allow"

        # principal
        has_p, has_np = "Principal" in st, "NotPrincipal" in st
        principals: tuple[PrincipalEntry, ...] | None = None
        if self.kind is PolicyKind.IDENTITY:
            if has_p or has_np:
                raise self.fail(MSG_PRINCIPAL_IN_IDENTITY)
        else:
            if has_p == has_np:
                raise self.fail(
                    "A resource policy statement must contain exactly one of Principal or NotPrincipal."
                )
            if has_np and allow:
                raise self.fail("NotPrincipal may be used only with Deny.")
            principals = self.principals(st["Principal"] if has_p else st["NotPrincipal"])

        # action
        has_a, has_na = "Action" in st, "NotAction" in st
        if has_a and has_na:
            raise self.fail("A statement must contain Action or NotAction, not both.")
        if not has_a and not has_na:
            raise self.fail(MSG_NO_ACTIONS)
        actions = tuple(
            self.action(a) for a in self.strings(st["Action" if has_a else "NotAction"], "Action")
        )

        # resource
        has_r, has_nr = "Resource" in st, "NotResource" in st
        if self.kind is PolicyKind.TRUST:
            if has_r or has_nr:
                raise self.fail(MSG_TRUST_RESOURCE)
            has_r, st = True, {**st, "Resource": "*"}  # the role the policy belongs to
        if has_r and has_nr:
            raise self.fail("A statement must contain Resource or NotResource, not both.")
        if not has_r and not has_nr:
            raise self.fail(MSG_NO_RESOURCES)
        resources = tuple(
            self.resource(r) for r in self.strings(st["Resource" if has_r else "NotResource"], "Resource")
        )

        conditions = self.conditions(st["Condition"]) if "Condition" in st else ()
        return Statement(
            index=index,
            sid=sid,
            allow=allow,
            not_action=has_na,
            actions=actions,
            not_resource=has_nr,
            resources=resources,
            not_principal=has_np,
            principals=principals,
            conditions=conditions,
        )

    def action(self, text: str) -> Glob:
        # "*" or vendor:name; the vendor is letters, digits, '.' and '-'; matching ignores case.
        if text == "*":
            return Glob.parse("*")
        if ":" not in text:
            raise self.fail(MSG_VENDOR)
        if text.count(":") > 1:
            raise self.fail(MSG_ONE_COLON)
        vendor, _ = text.split(":", 1)
        if not _VENDOR.fullmatch(vendor):
            raise self.fail(f"Vendor {vendor} is not valid")
        if self.variables and "${" in text:
            raise self.fail(f"Policy variables are not allowed in Action: {text}")
        return Glob.parse(text, fold=True)

    def resource(self, text: str) -> ArnPattern:
        # "*" or an ARN of six colon-separated parts (the last may hold further colons); no wildcard in the
        # service part; variables only in the last part.
        if text == "*":
            return ArnPattern(text=text, parts=None)
        if self.variables and _variable_before_resource_part(text):
            raise self.fail(f"Policy variables are not allowed in Resource outside its resource part: {text}")
        parts = text.split(":", 5)
        if len(parts) != 6 or parts[0] != "arn":
            raise self.fail(f'Resource {text} must be in ARN format or "*".')
        if not parts[2] or has_wildcard(parts[2]):
            raise self.fail(MSG_RESOURCE_VENDOR)
        globs = [Glob(self.template(p, wildcards=True, variables=False, where="Resource")) for p in parts[:5]]
        tail = self.template(parts[5], wildcards=True, variables=True, where="Resource")
        if any(isinstance(t, Var) for t in tail):
            return ArnPattern(text=text, parts=tuple(globs), tail=tail)
        return ArnPattern(text=text, parts=(*globs, Glob(tail)))

    def principals(self, value: Any) -> tuple[PrincipalEntry, ...]:
        # "*" or a map whose members are AWS (accounts, users, roles, sessions, or "*") and Service; each a
        # string or an array. Wildcards inside a value, unknown forms and the Federated/CanonicalUser forms
        # are unsupported principals.
        if _is_str(value):
            if value == "*":
                return (PrincipalEntry(PrincipalForm.ANY, "*"),)
            raise self.fail(f"Unsupported principal {value}", principal=True)
        if not isinstance(value, dict) or not value:
            raise self.fail('Principal must be "*" or an object.', principal=True)
        out: list[PrincipalEntry] = []
        for typ, raw in value.items():
            if not isinstance(raw, (str, list)):
                raise self.fail(f"Unsupported principal {raw}", principal=True)
            items = self.strings(raw, "Principal")
            if typ == "AWS":
                out.extend(self.aws_principal(p) for p in items)
            elif typ == "Service":
                for p in items:
                    if not p or has_wildcard(p) or "${" in p:
                        raise self.fail(f"Unsupported principal {p}", principal=True)
                    out.append(PrincipalEntry(PrincipalForm.SERVICE, p))
            else:
                raise self.fail(f"Unsupported principal type {typ}", principal=True)
        return tuple(out)

    def aws_principal(self, p: str) -> PrincipalEntry:
        if p == "*":
            return PrincipalEntry(PrincipalForm.ANY, "*")
        if _ACCOUNT.fullmatch(p):
            return PrincipalEntry(PrincipalForm.ACCOUNT, f"arn:aws:iam::{p}:root", p)
        bad = self.fail(f"Unsupported principal {p}", principal=True)
        if has_wildcard(p) or "${" in p:
            raise bad
        parts = p.split(":", 5)
        if len(parts) != 6 or parts[0] != "arn" or parts[3] != "" or not _ACCOUNT.fullmatch(parts[4]):
            raise bad
        _, _partition, service, _, account, res = parts
        if service == "iam":
            if res == "root":
                return PrincipalEntry(PrincipalForm.ACCOUNT, p, account)
            if res.startswith("user/") and len(res) > 5:
                return PrincipalEntry(PrincipalForm.USER, p, account)
            if res.startswith("role/") and len(res) > 5:
                return PrincipalEntry(PrincipalForm.ROLE, p, account)
        if (
            service == "sts"
            and res.startswith("assumed-role/")
            and len(res.split("/")) == 3
            and all(res.split("/"))
        ):
            return PrincipalEntry(PrincipalForm.SESSION, p, account)
        raise bad

    # -- conditions ---------------------------------------------------------------------------------------

    def conditions(self, block: Any) -> tuple[Condition, ...]:
        # operator -> {key -> scalar or non-empty array of scalars}; operator names match case-insensitively;
        # an optional ForAllValues:/ForAnyValue: prefix and IfExists suffix (neither on Null).
        if not isinstance(block, dict):
            raise self.fail("Condition must be an object.")
        out: list[Condition] = []
        for op, keys in block.items():
            qualifier, family, compare, negated, if_exists = self.operator(op)
            if not isinstance(keys, dict):
                raise self.fail(f"The value of condition operator {op} must be an object.")
            for key, raw in keys.items():
                out.append(self.condition(op, qualifier, family, compare, negated, if_exists, key, raw))
        return tuple(out)

    def operator(self, op: str) -> tuple[Qualifier, Family, Compare, bool, bool]:
        name = op.casefold()
        qualifier = Qualifier.NONE
        if name.startswith("forallvalues:"):
            qualifier, name = Qualifier.ALL, name[len("forallvalues:") :]
        elif name.startswith("foranyvalue:"):
            qualifier, name = Qualifier.ANY, name[len("foranyvalue:") :]
        if_exists = name.endswith("ifexists")
        if if_exists:
            name = name[: -len("ifexists")]
        spec = _OPERATORS.get(name)
        if spec is None:
            raise self.fail(f"Unknown condition operator {op}.")
        family, compare, negated = spec
        if family is Family.NULL and (if_exists or qualifier is not Qualifier.NONE):
            raise self.fail(
                f"Condition operator {op} is not valid: Null takes neither IfExists nor a set qualifier."
            )
        return qualifier, family, compare, negated, if_exists

    def condition(
        self,
        op: str,
        qualifier: Qualifier,
        family: Family,
        compare: Compare,
        negated: bool,
        if_exists: bool,
        key: str,
        raw: Any,
    ) -> Condition:
        if ":" not in key:
            raise self.fail(MSG_VENDOR)
        if self.variables and "${" in key:
            raise self.fail(f"Policy variables are not allowed in condition keys: {key}")
        scalars = raw if isinstance(raw, list) else [raw]
        if not scalars:
            raise self.fail(f"The condition value for {key} must not be empty.")
        texts: list[str] = []
        for v in scalars:
            if isinstance(v, bool):
                texts.append("true" if v else "false")
            elif isinstance(v, str):  # strings and JSON numbers (kept as spelt)
                texts.append(str(v))
            else:
                raise self.fail(f"The condition value for {key} must be a string, number or boolean.")
        has_vars = False
        values: list[Any] = []
        for t in texts:
            if family in _VARIABLE_FAMILIES:
                tpl = self.template(
                    t,
                    wildcards=family in (Family.STRING_LIKE, Family.ARN),
                    variables=True,
                    where=f"{op} values",
                )
                if any(isinstance(x, Var) for x in tpl):
                    has_vars = True
                    values.append(tpl)
                else:
                    values.append(literal_value(family, tpl, self.fail_fn(op, t)))
            else:
                if self.variables and "${" in t:
                    raise self.fail(f"Policy variables are not allowed in {op} values: {t}")
                values.append(typed_literal(family, t, self.fail_fn(op, t)))
        return Condition(
            operator=op,
            family=family,
            compare=compare,
            negated=negated,
            if_exists=if_exists,
            qualifier=qualifier,
            key=key.casefold(),
            key_as_written=key,
            values=tuple(values),
            has_vars=has_vars,
            raw=tuple(texts),
        )

    def fail_fn(self, op: str, text: str) -> Callable[[], MalformedPolicy]:
        return lambda: self.fail(f"The value {text} is not valid for condition operator {op}.")


# --- typed literals (shared with evaluation, where request values are converted the same way) ---------------


def parse_decimal(text: str) -> Decimal | None:
    try:
        d = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def parse_date(text: str) -> datetime | None:
    """W3C ISO-8601 forms (date only = midnight UTC; no zone = UTC) or epoch seconds."""
    t = text.strip()
    d = parse_decimal(t)
    if d is not None and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", t):
        try:
            return datetime.fromtimestamp(float(d), tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", t):
            day = date.fromisoformat(t)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        dt = datetime.fromisoformat(t)
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def parse_binary(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def arn_globs(tokens: Template) -> tuple[Glob, ...] | None:
    """Split a tokenised ARN pattern at its first five colons (literal colons only) into six Globs."""
    parts: list[list[Any]] = [[]]
    for tok in tokens:
        if isinstance(tok, str) and len(parts) < 6 and ":" in tok:
            pieces = tok.split(":", 6 - len(parts))
            parts[-1].append(pieces[0])
            for p in pieces[1:]:
                parts.append([p] if p else [])
        else:
            parts[-1].append(tok)
    if len(parts) != 6:
        return None
    return tuple(Glob(p) for p in parts)


def literal_value(family: Family, tpl: Template, fail: Callable[[], MalformedPolicy]) -> Any:
    """A condition literal without variables, compiled for its family."""
    if family is Family.STRING_LIKE:
        return Glob(tpl)
    if family is Family.ARN:
        globs = arn_globs(tpl)
        # A pattern that is not an ARN can never match an ARN; keep it as a pattern that matches nothing.
        return globs if globs is not None else ()
    text = "".join(t for t in tpl if isinstance(t, str))
    if family is Family.STRING_FOLD:
        return text.casefold()
    if family is Family.BOOL:
        if text.casefold() not in ("true", "false"):
            raise fail()
        return text.casefold()
    return text


def typed_literal(family: Family, text: str, fail: Callable[[], MalformedPolicy]) -> Any:
    value: Any
    if family is Family.NUMERIC:
        value = parse_decimal(text)
    elif family is Family.DATE:
        value = parse_date(text)
    elif family is Family.BINARY:
        value = parse_binary(text)
    elif family is Family.IP:
        value = parse_network(text)
    elif family is Family.NULL:
        value = text.casefold() if text.casefold() in ("true", "false") else None
    else:  # pragma: no cover - families with variables are handled by literal_value
        value = text
    if value is None:
        raise fail()
    return value


def iam_policy_size(text: str) -> int:
    """How IAM counts a document against its size quotas: characters other than whitespace."""
    return sum(1 for ch in text if not ch.isspace())


def parse_policy(
    text: str, kind: PolicyKind = PolicyKind.IDENTITY, *, require_current: bool = False, name: str = ""
) -> Policy:
    """Validate and compile a policy document; ``MalformedPolicy`` when it breaks the grammar.

    ``require_current`` insists on Version 2012-10-17 (identity policies created through the admin API)."""
    return _Parser(kind).document(text, require_current=require_current, name=name)

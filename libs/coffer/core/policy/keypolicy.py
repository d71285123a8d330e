"""KMS key policies: the default documents, parsing, and AWS KMS's decision rule. Pure.

KMS differs from Secrets Manager: the KEY POLICY is required. An identity policy grants access to a key only
when the key policy delegates to the caller's account (a statement naming ``arn:aws:iam::<acct>:root`` or the
account id). So, for a caller of the key's own account:

1. an applicable Deny in an identity policy or in the key policy → denied (explicit deny always wins);
2. the key policy allows the caller directly (``*``, the user, the role or its session) → allowed;
3. the key policy allows the caller's account (the root statement) → the identity policies must allow too (the
   account root itself needs nothing more);
4. otherwise → denied, "because no resource-based policy allows the <action> action".

Across accounts both are always needed: the key policy must allow the caller or its account, AND the caller's
identity policies must allow (or the caller is its account's root).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from coffer.core import errors
from coffer.core.policy.evaluate import (
    Citation,
    Decision,
    Match,
    Reason,
    denial_message,
    identity_matches,
    is_root,
    resource_matches,
    statement_applies,
)
from coffer.core.policy.grammar import parse_policy
from coffer.core.policy.model import MalformedPolicy, Policy, PolicyKind, RequestContext
from coffer.core.principal import Principal, PrincipalKind

DEFAULT_POLICY_NAME = "default"
#: KMS's quota on a key policy document (characters).
MAX_KEY_POLICY_LENGTH = 32768
LOCKOUT_MESSAGE = "The new key policy will not allow you to update the key policy in the future."


def default_key_policy_text(account: str, partition: str = "aws") -> str:
    """AWS's default key policy: the account's principals get access through their IAM policies."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:{partition}:iam::{account}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        },
        separators=(",", ":"),
    )


def aws_managed_key_policy_text(account: str, region: str, service: str, partition: str = "aws") -> str:
    """The key policy of an AWS-managed key (``aws/<service>``): crypto only through that service by
    principals of the account, metadata reads for the account."""
    via_sid = (
        f"Allow access through AWS {_SERVICE_TITLES.get(service, service)} for all principals in the account "
        f"that are authorized to use AWS {_SERVICE_TITLES.get(service, service)}"
    )
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": f"auto-{service}-2",
            "Statement": [
                {
                    "Sid": via_sid,
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": [
                        "kms:Encrypt",
                        "kms:Decrypt",
                        "kms:ReEncrypt*",
                        "kms:CreateGrant",
                        "kms:DescribeKey",
                    ],
                    "Resource": "*",
                    "Condition": {
                        "StringEquals": {
                            "kms:CallerAccount": account,
                            "kms:ViaService": f"{service}.{region}.amazonaws.com",
                        }
                    },
                },
                {
                    # AWS repeats the Sid; the policy engine requires unique Sids
                    "Sid": f"{via_sid} (data keys)",
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": "kms:GenerateDataKey*",
                    "Resource": "*",
                    "Condition": {
                        "StringEquals": {"kms:CallerAccount": account},
                        "StringLike": {"kms:ViaService": f"{service}.*.amazonaws.com"},
                    },
                },
                {
                    "Sid": "Allow direct access to key metadata to the account",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:{partition}:iam::{account}:root"},
                    "Action": ["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"],
                    "Resource": "*",
                },
            ],
        },
        separators=(",", ":"),
    )


_SERVICE_TITLES = {"secretsmanager": "Secrets Manager"}


def parse_key_policy(text: str, *, name: str = DEFAULT_POLICY_NAME) -> Policy:
    """Compile a key policy (a resource-style policy); ``MalformedPolicyDocumentException`` if it is not
    one."""
    if not text or len(text) > MAX_KEY_POLICY_LENGTH:
        raise errors.InvalidParameter(
            f"Policy must be between 1 and {MAX_KEY_POLICY_LENGTH} characters long.",
            code="MalformedPolicyDocumentException",
        )
    try:
        return parse_policy(text, PolicyKind.RESOURCE, name=name)
    except MalformedPolicy as e:
        raise errors.InvalidParameter(
            f"The key policy is malformed: {e.detail}", code="MalformedPolicyDocumentException"
        ) from None


def decide_key(
    caller: Principal,
    action: str,
    key_arn: str,
    key_policy: Policy,
    *,
    key_account: str,
    keys: Mapping[str, Sequence[str]] | None = None,
) -> Decision:
    """AWS KMS's decision for ``caller`` doing ``action`` (``kms:…``) on the key (never raises)."""
    ctx = caller.request_context(action, key_arn, resource_account=key_account, keys=_kms_keys(caller, keys))
    try:
        return _decide(ctx, caller.policies, key_policy)
    except Exception as e:  # fail closed
        return Decision(
            False, Reason.EVALUATION_ERROR, denial_message(ctx, Reason.NO_RESOURCE_ALLOW), (), detail=str(e)
        )


def _kms_keys(caller: Principal, keys: Mapping[str, Sequence[str]] | None) -> dict[str, Sequence[str]]:
    out: dict[str, Sequence[str]] = dict(keys or {})
    out.setdefault("kms:CallerAccount", (caller.account,))
    return out


def _decide(ctx: RequestContext, identity: Sequence[Policy], key_policy: Policy) -> Decision:
    id_deny, id_allow = identity_matches(ctx, identity)
    res_deny, res_direct, res_account = resource_matches(ctx, key_policy)

    def deny(reason: Reason, cited: list[Citation]) -> Decision:
        return Decision(False, reason, denial_message(ctx, reason), tuple(cited))

    if id_deny:
        return deny(Reason.EXPLICIT_DENY_IDENTITY, id_deny + res_deny)
    if res_deny:
        return deny(Reason.EXPLICIT_DENY_RESOURCE, res_deny)
    if not res_direct and not res_account:
        return deny(Reason.NO_RESOURCE_ALLOW, id_allow)
    same_account = ctx.resource_account is None or ctx.resource_account == ctx.principal_account
    root = is_root(ctx)
    if same_account and res_direct:
        return Decision(True, Reason.ALLOW_RESOURCE, "", tuple(res_direct))
    if id_allow:
        reason = Reason.ALLOW_IDENTITY if same_account else Reason.ALLOW_CROSS_ACCOUNT
        return Decision(True, reason, "", tuple(id_allow + res_direct + res_account))
    if root:
        return Decision(True, Reason.ALLOW_ROOT, "", tuple(res_direct + res_account))
    return deny(Reason.NO_IDENTITY_ALLOW, res_direct + res_account)


def authorize_key(
    caller: Principal,
    action: str,
    key_arn: str,
    key_policy: Policy,
    *,
    key_account: str,
    keys: Mapping[str, Sequence[str]] | None = None,
) -> Decision:
    """Like :func:`decide_key`, but raise ``AccessDeniedException`` (AWS's text) on a denial."""
    decision = decide_key(caller, action, key_arn, key_policy, key_account=key_account, keys=keys)
    if not decision.allowed:
        raise decision.error()
    return decision


def check_lockout(caller: Principal, key_arn: str, new_policy: Policy, *, key_account: str) -> None:
    """The lockout safety check of CreateKey/PutKeyPolicy: the caller must still be allowed
    ``kms:PutKeyPolicy`` under the new policy (skipped when BypassPolicyLockoutSafetyCheck is true)."""
    if not decide_key(caller, "kms:PutKeyPolicy", key_arn, new_policy, key_account=key_account).allowed:
        raise errors.InvalidParameter(LOCKOUT_MESSAGE, code="MalformedPolicyDocumentException")


def allows_account(key_policy: Policy, key_arn: str, key_account: str, account: str, action: str) -> bool:
    """Does the key policy let principals of ``account`` do ``action`` (an Allow naming the account, its
    root, or everyone, and no Deny naming them)? Used for cross-account secret access."""
    probe = Principal(
        arn=f"arn:aws:iam::{account}:root",
        account=account,
        kind=PrincipalKind.ACCOUNT,
        name="root",
    )
    ctx = probe.request_context(
        action, key_arn, resource_account=key_account, keys={"kms:CallerAccount": (account,)}
    )
    allowed = False
    for st in key_policy.statements:
        try:
            how = statement_applies(st, ctx)
        except Exception:
            return False
        if how is Match.NONE:
            continue
        if not st.allow:
            return False
        allowed = True
    return allowed

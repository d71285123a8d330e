"""The one policy engine: IAM-style identity and resource policies for Coffer. Pure: no I/O.

Parse a document once (``parse_policy`` or a ``PolicyCache``), then ``evaluate`` a ``RequestContext`` against
the caller's identity policies and the secret's resource policy; the ``Decision`` says allowed or not, why,
which statements decided, and the AccessDeniedException text. ``grants_broad_access`` is BlockPublicPolicy's
check and ``validate_resource_policy`` is ValidateResourcePolicy's.
"""

from coffer.core.policy.cache import PolicyCache
from coffer.core.policy.evaluate import (
    Citation,
    Decision,
    KeyAccess,
    Reason,
    condition_holds,
    denial_message,
    evaluate,
)
from coffer.core.policy.glob import Glob
from coffer.core.policy.grammar import parse_policy
from coffer.core.policy.model import (
    EvaluationError,
    MalformedPolicy,
    Policy,
    PolicyKind,
    PublicPolicy,
    RequestContext,
)
from coffer.core.policy.public import (
    ValidationError,
    ValidationResult,
    broad_statements,
    check_resource_policy_for_put,
    grants_broad_access,
    named_principals,
    validate_resource_policy,
)

__all__ = [
    "Citation",
    "Decision",
    "EvaluationError",
    "Glob",
    "KeyAccess",
    "MalformedPolicy",
    "Policy",
    "PolicyCache",
    "PolicyKind",
    "PublicPolicy",
    "Reason",
    "RequestContext",
    "ValidationError",
    "ValidationResult",
    "broad_statements",
    "check_resource_policy_for_put",
    "condition_holds",
    "denial_message",
    "evaluate",
    "grants_broad_access",
    "named_principals",
    "parse_policy",
    "validate_resource_policy",
]

"""The store's IAM: users, roles, inline policies, access keys, sessions (AssumeRole) and accounts, over the
tables of migration 0005_iam.sql; the public ``coffer.api.iam.v1`` services, forwarded by the gateway."""

from coffer.store.iam.repository import NOTIFY_CHANNEL, IamRepository, ensure_root_account
from coffer.store.iam.servicer import (
    IamCore,
    IdentityManagementServicer,
    OrganizationsServicer,
    SecurityTokenServicer,
)

__all__ = [
    "NOTIFY_CHANNEL",
    "IamCore",
    "IamRepository",
    "IdentityManagementServicer",
    "OrganizationsServicer",
    "SecurityTokenServicer",
    "ensure_root_account",
]

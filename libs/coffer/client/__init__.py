"""Coffer's Python SDK. ``CofferClient`` (sync) and ``AsyncCofferClient`` (asyncio) talk to the gateway over
TLS, each call signed with an access key (``coffer.client.credentials``);
methods return the response protobuf messages and raise ``CofferError`` subclasses
whose ``code`` is the AWS error name. Calls that fail with a retryable error are retried like the AWS SDKs'
standard mode (``coffer.client.retry``)."""

from coffer.client._ops import EndpointUnreachable
from coffer.client.aio import (
    AsyncCofferClient,
    AsyncIamClient,
    AsyncKmsClient,
    AsyncOrganizationsClient,
    AsyncStsClient,
)
from coffer.client.credentials import Credentials
from coffer.client.profile import ConfigurationError, Connection, Profile, load_profile, resolve_connection
from coffer.client.retry import DeadlineExceeded, RetryPolicy, RetryQuota
from coffer.client.sync import CofferClient, IamClient, KmsClient, OrganizationsClient, StsClient
from coffer.core.errors import CofferError

__all__ = [
    "AsyncCofferClient",
    "AsyncIamClient",
    "AsyncKmsClient",
    "AsyncOrganizationsClient",
    "AsyncStsClient",
    "CofferClient",
    "CofferError",
    "ConfigurationError",
    "Connection",
    "Credentials",
    "DeadlineExceeded",
    "EndpointUnreachable",
    "IamClient",
    "KmsClient",
    "OrganizationsClient",
    "Profile",
    "RetryPolicy",
    "RetryQuota",
    "StsClient",
    "load_profile",
    "resolve_connection",
]

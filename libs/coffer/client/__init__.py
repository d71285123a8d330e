"""Coffer's Python SDK. ``CofferClient`` (sync) and ``AsyncCofferClient`` (asyncio) talk to the gateway over
TLS, each call signed with an access key (``coffer.client.credentials``);
methods return the response protobuf messages and raise ``CofferError`` subclasses
whose ``code`` is the AWS error name."""

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
    "EndpointUnreachable",
    "IamClient",
    "KmsClient",
    "OrganizationsClient",
    "Profile",
    "StsClient",
    "load_profile",
    "resolve_connection",
]

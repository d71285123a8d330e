"""``SecretsApi`` over the public API: the SDK's ``AsyncCofferClient`` talking to the gateway over TLS as
role ``coffer-rotation``, so every step a rotator takes is authenticated, authorized and audited like any
other caller's.

The rotation service holds only the long-term access key of IAM user ``coffer-rotation``
(``COFFER_ROTATION_ACCESS_KEY_ID`` / ``_SECRET_ACCESS_KEY``, or the file
``COFFER_ROTATION_CREDENTIALS_FILE``), whose one permission is ``sts:AssumeRole`` on the role. It assumes
the role through the gateway (``COFFER_ROTATION_ROLE_ARN``, sessions of
``COFFER_ROTATION_SESSION_SECONDS``) and signs every rotation call with the session, assuming the role
again before the session ends (``coffer.client.assume_role.AssumeRoleProvider``)."""

from __future__ import annotations

import socket
from pathlib import Path

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client.aio import AsyncCofferClient
from coffer.client.assume_role import AssumeRoleProvider, check_session_seconds, sts_assume_role
from coffer.client.credentials import CredentialProvider, Credentials, FileCredentials
from coffer.core import errors
from coffer.rotation.rotators.base import SecretValue
from coffer.settings import Settings, connect_address

PENDING = "AWSPENDING"
CURRENT = "AWSCURRENT"


def rotation_credentials(settings: Settings) -> Credentials | CredentialProvider | None:
    """The rotation service's long-term access key (IAM user ``coffer-rotation``): from its settings, else
    from its credentials file (re-read when it is replaced, so a new key is used without a restart); None:
    none."""
    if settings.rotation_access_key_id and settings.rotation_secret_access_key:
        return Credentials(settings.rotation_access_key_id, settings.rotation_secret_access_key)
    if settings.rotation_credentials_file is not None:
        try:
            return FileCredentials(settings.rotation_credentials_file)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise errors.Unavailable(
                f"The rotation credentials file {settings.rotation_credentials_file} is unreadable: {exc}"
            ) from None
    return None


def session_name() -> str:
    """The role session's name: the rotation service and its host (AWS: ``[\\w+=,.@-]{2,64}``)."""
    host = "".join(c if c.isalnum() or c in "+=,.@-_" else "-" for c in socket.gethostname())
    return f"coffer-rotation@{host}"[:64]


class GatewaySecretsApi:
    """The rotation service's view of the public Secrets Manager API."""

    def __init__(self, client: AsyncCofferClient, *, base: AsyncCofferClient | None = None) -> None:
        self._client = client
        #: The client signing with the long-term key (STS only), closed with this one.
        self._base = base

    @classmethod
    def assuming_role(
        cls,
        endpoint: str,
        ca_file: str | Path,
        user_credentials: Credentials | CredentialProvider,
        *,
        role_arn: str,
        session_seconds: int = 3600,
        region: str | None = None,
        session: str | None = None,
    ) -> GatewaySecretsApi:
        """An API signing every call with sessions of ``role_arn``, assumed through the gateway at
        ``endpoint`` with ``user_credentials``."""
        check_session_seconds(session_seconds)
        base = AsyncCofferClient(endpoint, ca_file, user_credentials, region=region)
        provider = AssumeRoleProvider(
            sts_assume_role(
                base.sts,
                role_arn=role_arn,
                session_name=session or session_name(),
                duration_seconds=session_seconds,
            )
        )
        client = AsyncCofferClient(endpoint, ca_file, provider, region=region)
        return cls(client, base=base)

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewaySecretsApi:
        credentials = rotation_credentials(settings)
        if credentials is None:
            raise errors.Unavailable(
                "The rotation service needs its access key for the public API: set "
                "COFFER_ROTATION_ACCESS_KEY_ID and COFFER_ROTATION_SECRET_ACCESS_KEY, or "
                "COFFER_ROTATION_CREDENTIALS_FILE (`make run` issues IAM user coffer-rotation's key)."
            )
        return cls.assuming_role(
            connect_address(settings.gateway_addr),
            Path(settings.pki_dir) / "ca.crt",
            credentials,
            role_arn=settings.rotation_role_arn,
            session_seconds=settings.rotation_session_seconds,
            region=settings.region,
        )

    @property
    def client(self) -> AsyncCofferClient:
        return self._client

    async def aclose(self) -> None:
        try:
            await self._client.close()
        finally:
            if self._base is not None:
                await self._base.close()

    async def get_value(
        self, *, secret_id: str, version_id: str | None = None, version_stage: str | None = None
    ) -> SecretValue:
        fields: dict[str, str] = {"secret_id": secret_id}
        if version_id is not None:
            fields["version_id"] = version_id
        if version_stage is not None:
            fields["version_stage"] = version_stage
        reply = await self._client.get_secret_value(**fields)
        return SecretValue(
            arn=reply.arn,
            name=reply.name,
            version_id=reply.version_id,
            secret_string=reply.secret_string if reply.HasField("secret_string") else None,
            secret_binary=reply.secret_binary if reply.HasField("secret_binary") else None,
            version_stages=tuple(reply.version_stages),
        )

    async def put_pending_value(self, *, secret_id: str, token: str, secret_string: str) -> None:
        await self._client.put_secret_value(
            secret_id=secret_id,
            client_request_token=token,
            secret_string=secret_string,
            version_stages=[PENDING],
        )

    async def version_stages(self, *, secret_id: str) -> dict[str, list[str]]:
        reply = await self._client.describe_secret(secret_id=secret_id)
        return {vid: list(stages.stages) for vid, stages in reply.version_ids_to_stages.items()}

    async def move_current(self, *, secret_id: str, to_version_id: str, from_version_id: str | None) -> None:
        fields: dict[str, str] = {
            "secret_id": secret_id,
            "version_stage": CURRENT,
            "move_to_version_id": to_version_id,
        }
        if from_version_id is not None:
            fields["remove_from_version_id"] = from_version_id
        await self._client.update_secret_version_stage(**fields)

    async def random_password(
        self,
        *,
        length: int = 32,
        exclude_characters: str = "",
        exclude_punctuation: bool = False,
    ) -> str:
        reply = await self._client.get_random_password(
            password_length=length,
            exclude_characters=exclude_characters,
            exclude_punctuation=exclude_punctuation,
        )
        return reply.random_password

    async def rotation_functions(self) -> list[sm.RotationFunction]:
        """ListRotationFunctions (beyond AWS): the registered custom rotation functions."""
        reply = await self._client.call("ListRotationFunctions")
        assert isinstance(reply, sm.ListRotationFunctionsResponse)
        return list(reply.functions)

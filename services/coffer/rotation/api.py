"""``SecretsApi`` over the public API: the SDK's ``AsyncCofferClient`` talking to the gateway over TLS with
the rotation service's own IAM identity (session credentials of role ``coffer-rotation``: access key, secret
and session token, ``COFFER_ROTATION_ACCESS_KEY_ID`` / ``_SECRET_ACCESS_KEY`` / ``_SESSION_TOKEN``), so every
step a rotator takes is
authenticated, authorized and audited like any other caller's."""

from __future__ import annotations

from pathlib import Path

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client.aio import AsyncCofferClient
from coffer.client.credentials import CredentialProvider, Credentials, FileCredentials
from coffer.core import errors
from coffer.rotation.rotators.base import SecretValue
from coffer.settings import Settings, connect_address

PENDING = "AWSPENDING"
CURRENT = "AWSCURRENT"


def rotation_credentials(settings: Settings) -> Credentials | CredentialProvider | None:
    """The rotation service's credentials: from its settings, else from its credentials file (re-read when
    it is replaced, so a renewed session is used without a restart); None: none."""
    if settings.rotation_access_key_id and settings.rotation_secret_access_key:
        return Credentials(
            settings.rotation_access_key_id,
            settings.rotation_secret_access_key,
            settings.rotation_session_token or None,
        )
    if settings.rotation_credentials_file is not None:
        try:
            return FileCredentials(settings.rotation_credentials_file)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise errors.Unavailable(
                f"The rotation credentials file {settings.rotation_credentials_file} is unreadable: {exc}"
            ) from None
    return None


class GatewaySecretsApi:
    """The rotation service's view of the public Secrets Manager API."""

    def __init__(self, client: AsyncCofferClient) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewaySecretsApi:
        credentials = rotation_credentials(settings)
        if credentials is None:
            raise errors.Unavailable(
                "The rotation service needs its access key for the public API: set "
                "COFFER_ROTATION_ACCESS_KEY_ID, COFFER_ROTATION_SECRET_ACCESS_KEY and "
                "COFFER_ROTATION_SESSION_TOKEN, or COFFER_ROTATION_CREDENTIALS_FILE (`make run` issues the "
                "coffer-rotation role's session)."
            )
        client = AsyncCofferClient(
            connect_address(settings.gateway_addr),
            Path(settings.pki_dir) / "ca.crt",
            credentials,
            region=settings.region,
        )
        return cls(client)

    @property
    def client(self) -> AsyncCofferClient:
        return self._client

    async def aclose(self) -> None:
        await self._client.close()

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

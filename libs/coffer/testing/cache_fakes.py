"""Fakes for unit tests of the caching client and the agent: a secrets service in a dict and a change
stream the test feeds (never used outside tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.core import errors


class FakeSecretsClient:
    """A secrets service in a dict (name → list of (version id, value, stages)) and a change stream fed by
    the test (``push``, ``fail``)."""

    def __init__(self) -> None:
        self.secrets: dict[str, list[tuple[str, str | bytes, list[str]]]] = {}
        self.calls: list[dict[str, Any]] = []
        self.watch_calls: list[str | None] = []
        self.failure: errors.CofferError | None = None
        self.gate: asyncio.Event | None = None
        self._streams: list[asyncio.Queue[Any]] = []
        self.watching = asyncio.Event()

    def arn(self, name: str) -> str:
        return f"arn:aws:secretsmanager:local-1:000000000000:secret:{name}-AbCdEf"

    def put(self, name: str, value: str | bytes, version: str | None = None) -> None:
        versions = self.secrets.setdefault(name, [])
        for _, _, stages in versions:
            if "AWSCURRENT" in stages:
                stages.remove("AWSCURRENT")
        versions.append((version or f"v{len(versions) + 1}", value, ["AWSCURRENT"]))

    def _find(self, secret_id: str) -> str:
        for name in self.secrets:
            if secret_id in (name, self.arn(name)):
                return name
        raise errors.NotFound()

    async def get_secret_value(self, **fields: Any) -> sm.GetSecretValueResponse:
        self.calls.append(fields)
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        name = self._find(fields["secret_id"])
        for vid, value, stages in self.secrets[name]:
            wanted_stage = fields.get("version_stage", stages[0] if stages else "")
            if fields.get("version_id", vid) == vid and wanted_stage in stages:
                response = sm.GetSecretValueResponse(
                    arn=self.arn(name), name=name, version_id=vid, version_stages=stages
                )
                if isinstance(value, bytes):
                    response.secret_binary = value
                else:
                    response.secret_string = value
                response.created_date.FromSeconds(1569534789)
                return response
        raise errors.NotFound("Secrets Manager can't find the specified secret value for staging label.")

    async def describe_secret(self, **fields: Any) -> sm.DescribeSecretResponse:
        if self.failure is not None:
            raise self.failure
        name = self._find(fields["secret_id"])
        return sm.DescribeSecretResponse(arn=self.arn(name), name=name)

    def watch_secrets(
        self, *, resume_token: str | None = None, secret_ids: Any = (), name_prefix: str | None = None
    ) -> AsyncIterator[sm.SecretChangeEvent]:
        self.watch_calls.append(resume_token)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams.append(queue)
        self.watching.set()

        async def stream() -> AsyncIterator[sm.SecretChangeEvent]:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item

        return stream()

    async def push(self, kind: str, name: str, token: str, *, arn: bool = True) -> None:
        event = sm.SecretChangeEvent(
            resume_token=token, kind=kind, name=name, arn=self.arn(name) if arn else ""
        )
        await self._streams[-1].put(event)

    async def fail(self, error: BaseException) -> None:
        self.watching.clear()
        await self._streams[-1].put(error)

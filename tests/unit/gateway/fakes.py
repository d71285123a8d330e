"""Fakes shared by the unit tests of the gateway's HTTP pipelines (the AWS endpoint and the web console): a
principal directory holding IAM user alice's access keys, an audit trail that keeps what it is given, and
a record of the operations called."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from coffer.core.policy.model import Policy
from coffer.core.principal import Principal, PrincipalKind
from coffer.principal_directory import AccessKeyRecord, Resolved

ALICE_ARN = "arn:aws:iam::000000000000:user/alice"


def alice_record(akid: str, secret: str | None) -> AccessKeyRecord:
    """An access key of IAM user alice (``secret``: its kept secret access key, None when not kept)."""
    return AccessKeyRecord(
        access_key_id=akid,
        principal_arn=ALICE_ARN,
        account_id="000000000000",
        kind=PrincipalKind.USER,
        name="alice",
        unique_id="AIDAEXAMPLE",
        signing_key=b"k" * 32,
        secret_access_key=secret,
    )


class FakeDirectory:
    """Resolves the access keys it holds to alice, with ``policies``."""

    def __init__(self, records: dict[str, AccessKeyRecord], policies: tuple[Policy, ...] = ()) -> None:
        self.records = records
        self.policies = policies

    def deactivate(self, akid: str) -> None:
        self.records[akid] = dataclasses.replace(self.records[akid], status="Inactive")

    async def resolve(self, access_key_id: str) -> Resolved | None:
        record = self.records.get(access_key_id)
        if record is None:
            return None
        principal = Principal(
            arn=record.principal_arn,
            account=record.account_id,
            kind=record.kind,
            name=record.name,
            access_key_id=access_key_id,
            policies=self.policies,
        )
        return Resolved(record=record, principal=principal)


@dataclass
class FakeTrail:
    events: list[Any] = field(default_factory=list)

    async def record(self, event: Any) -> None:
        self.events.append(event)


@dataclass
class Seen:
    calls: list[dict[str, Any]] = field(default_factory=list)
    fail: BaseException | None = None

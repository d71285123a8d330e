"""AWS JSON 1.1 ⇄ the public protobuf messages, for every Secrets Manager and KMS operation Coffer serves.

SEAM (issue 10): the one place that translates. Member names follow the rule in secrets.proto (an AWS member
is the PascalCase of the snake_case field, with the exceptions AWS spells otherwise, e.g. ``ARN``);
timestamps are epoch seconds with fractions; blobs standard base64 with padding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

#: ``X-Amz-Target`` → full gRPC method name of the public operation it runs
#: (``secretsmanager.GetSecretValue`` → ``/coffer.api.secrets.v1.SecretsManagerService/GetSecretValue``).
TARGETS: Mapping[str, str] = {}


def request_from_json(request_class: type[Message], body: Any) -> Message:
    """The request message of a parsed JSON body; raises ``errors.Validation``-class errors with AWS's
    code (``SerializationException`` for a wrong JSON type, ``ValidationException`` …) for input AWS
    refuses at the protocol level."""
    raise NotImplementedError


def response_to_json(response: Message) -> dict[str, Any]:
    """The JSON object AWS sends for this response message."""
    raise NotImplementedError

"""The rotator registry: a RotateSecret ``RotationLambdaARN`` → the rotator that runs it. Built-in names map
to built-in rotators (the database ones when their modules are present); anything else is the ARN of a
registered custom rotation function, looked up through the public ListRotationFunctions."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from coffer import logs
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.core.rotation import (
    BUILTIN_ROTATORS,
    DATABASE_ROTATORS,
    MYSQL_ALTERNATING_USERS,
    MYSQL_SINGLE_USER,
    POSTGRESQL_ALTERNATING_USERS,
    POSTGRESQL_SINGLE_USER,
    RANDOM_VALUE,
)
from coffer.rotation.rotators.base import RotationStepError, Rotator
from coffer.rotation.rotators.function import FunctionRotator
from coffer.rotation.rotators.random_value import RandomValueRotator
from coffer.targets import TargetGuard

log = logs.get_logger("coffer.rotation.rotators")

#: Built-in names served by the database modules: name → (module, class).
_DATABASE_ROTATORS: dict[str, tuple[str, str]] = {
    POSTGRESQL_SINGLE_USER: ("coffer.rotation.rotators.postgres", "PostgresSingleUserRotator"),
    POSTGRESQL_ALTERNATING_USERS: ("coffer.rotation.rotators.postgres", "PostgresAlternatingUsersRotator"),
    MYSQL_SINGLE_USER: ("coffer.rotation.rotators.mysql", "MySqlSingleUserRotator"),
    MYSQL_ALTERNATING_USERS: ("coffer.rotation.rotators.mysql", "MySqlAlternatingUsersRotator"),
}
assert set(_DATABASE_ROTATORS) == set(DATABASE_ROTATORS)
BUILTIN_NAMES = BUILTIN_ROTATORS


class FunctionDirectory(Protocol):
    async def rotation_functions(self) -> list[sm.RotationFunction]: ...


def _database_rotator(name: str, targets: TargetGuard) -> Rotator | None:
    """A new instance of the database rotator called ``name`` (None when its module is missing)."""
    module_name, class_name = _DATABASE_ROTATORS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    factory: Any = getattr(module, class_name, None)
    if factory is None:
        return None
    rotator: Rotator = factory(targets=targets)
    return rotator


class RotatorRegistry:
    def __init__(
        self,
        *,
        functions: FunctionDirectory,
        default_ca_pem: bytes,
        extra: Mapping[str, Callable[[], Rotator]] | None = None,
        targets: TargetGuard | None = None,
        client_identity: tuple[bytes, bytes] | None = None,
    ) -> None:
        """``targets``: where database rotators and functions may connect (default: the policy with nothing
        set); ``client_identity``: (key PEM, certificate PEM) the rotation service presents to functions."""
        self._functions = functions
        self._default_ca_pem = default_ca_pem
        self._targets = targets or TargetGuard.default()
        self._client_key: bytes | None = client_identity[0] if client_identity else None
        self._client_cert: bytes | None = client_identity[1] if client_identity else None
        self._builtins: dict[str, Callable[[], Rotator]] = {RANDOM_VALUE: RandomValueRotator}
        self._builtins.update(extra or {})

    async def resolve(self, name: str) -> Rotator:
        """The rotator for ``name``; a FunctionRotator must be closed by the caller (see ``release``)."""
        factory = self._builtins.get(name)
        if factory is not None:
            return factory()
        if name in _DATABASE_ROTATORS:
            rotator = _database_rotator(name, self._targets)
            if rotator is None:
                raise RotationStepError(f"The built-in rotator {name} is not available in this build.")
            return rotator
        for function in await self._functions.rotation_functions():
            if function.arn == name or function.name == name:
                return FunctionRotator(
                    function,
                    default_ca_pem=self._default_ca_pem,
                    targets=self._targets,
                    client_key_pem=self._client_key,
                    client_cert_pem=self._client_cert,
                )
        raise RotationStepError(
            f"No rotation function {name} is registered (RegisterRotationFunction), and it is not a built-in "
            f"rotator ({', '.join(BUILTIN_NAMES)})."
        )

    @staticmethod
    async def release(rotator: Rotator) -> None:
        if isinstance(rotator, FunctionRotator):
            await rotator.close()

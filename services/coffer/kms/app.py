"""Use cases of the kms service, over Protocol-typed collaborators (a key store, a root key, a clock).

Check order for every keyed operation, as AWS KMS applies it: validate the shape → resolve the identifier
(NotFound) → caller policy for AWS-managed keys → the state gate (``coffer.kms.state``) → usage → act. Every
write runs in one transaction; changes that make a key usable or unusable notify ``coffer_kms_key_changed``
inside it.
"""

from __future__ import annotations

import functools
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol, TypeGuard

import structlog

from coffer.clock import Clock
from coffer.core import errors
from coffer.core.authorize import authorize
from coffer.core.policy import Policy
from coffer.core.policy.keypolicy import (
    DEFAULT_POLICY_NAME,
    authorize_key,
    aws_managed_key_policy_text,
    check_lockout,
    default_key_policy_text,
    parse_key_policy,
)
from coffer.core.principal import Principal, PrincipalKind
from coffer.crypto import blob as blobs
from coffer.crypto.rootkey import MaterialBinding, RootKey, UnwrapError
from coffer.kms import validation as v
from coffer.kms.ids import AliasRef, KeyIdRef, is_alias_form, is_key_id, parse_key_ref
from coffer.kms.model import (
    AWS_MANAGED_ROTATION_DAYS,
    DEFAULT_KEY_DESCRIPTION,
    ENCRYPTION_ALGORITHM,
    KEY_SPEC,
    KEY_USAGE,
    ORIGIN,
    PREDEFINED_ALIASES,
    Alias,
    DataKey,
    Decrypted,
    Encrypted,
    Key,
    KeyManager,
    KeyState,
    MaintenanceReport,
    Material,
    MaterialState,
    Page,
    RotationStatus,
    RotationType,
    ScheduledDeletion,
    Scope,
    Tag,
)
from coffer.kms.seal import Root, RootRetired, SoftRoot
from coffer.kms.state import Operation, check
from coffer.rpc.context import current_caller, current_peer

log = structlog.get_logger("coffer.kms")

MAX_ALIASES_PER_KEY = 50
MAX_ON_DEMAND_ROTATIONS = 25
RESERVED_ALIAS_PREFIX = "alias/aws/"
#: Service identities that may not use AWS-managed keys for crypto directly (only via Secrets Manager).
DEFAULT_AWS_KEY_CRYPTO_DENIED = frozenset({"gateway"})
#: The peer (certificate name) public calls come from.
PUBLIC_PEER = "gateway"
_NO_SUCH_CIPHERTEXT_KEY = (
    "The ciphertext refers to a customer master key that does not exist, does not exist in this region, "
    "or you are not allowed to access."
)


class KeyTx(Protocol):
    """Operations inside one database transaction."""

    async def lock_key(self, key_id: str) -> Key | None: ...
    async def insert_key(self, key: Key, material: Material) -> None: ...
    async def update_key(self, key: Key) -> None: ...
    async def add_material(self, material: Material) -> None:
        """Insert ``material`` as the key's CURRENT version; the previous one becomes NON_CURRENT."""
        ...

    async def get_alias(self, alias_name: str, *, for_update: bool = False) -> Alias | None: ...
    async def count_aliases(self, key_id: str) -> int: ...
    async def insert_alias(self, alias_name: str, key_id: str, now: datetime) -> None:
        """Raises ``KmsAlreadyExists`` when the name is taken."""
        ...

    async def delete_alias(self, alias_name: str) -> bool: ...
    async def delete_due_keys(self, now: datetime) -> list[str]:
        """Delete keys whose DeletionDate has passed, with their aliases and material; return their ids."""
        ...

    async def notify_key_changed(self, key_arn: str) -> None: ...
    async def set_key_policy(self, key_id: str, policy: str) -> None: ...


class KeyStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[KeyTx]: ...
    async def find_key(self, key_id: str) -> Key | None: ...
    async def find_key_by_alias(self, alias_name: str) -> Key | None: ...
    async def find_for_encrypt(
        self, *, key_id: str | None = None, alias_name: str | None = None
    ) -> tuple[Key, Material] | None:
        """The key (by id or alias) with its CURRENT material, in one round trip."""
        ...

    async def find_for_decrypt(self, key_id: str, material_id: str) -> tuple[Key, Material | None] | None:
        """The key with the named material version (``None`` if the key has no such version)."""
        ...

    async def list_key_ids(self, *, after: str | None, limit: int) -> list[str]: ...
    async def list_aliases(self, *, key_id: str | None, after: str | None, limit: int) -> list[Alias]: ...
    async def alias_exists(self, alias_name: str) -> bool: ...
    async def due_for_rotation(self, now: datetime, *, limit: int) -> list[str]: ...
    def scoped(self, scope: Scope) -> KeyStore:
        """The same store for another account."""
        ...

    async def accounts(self) -> list[str]: ...


class RootKeySource(Protocol):
    """Where the root keys come from: a fixed key (tests), or the seal (``coffer.kms.seal.Seal``)."""

    def current(self) -> Root:
        """The root that wraps new material; raises ``errors.KmsSealed`` while the kms is sealed."""
        ...

    def using(self, root_key_id: str) -> AbstractAsyncContextManager[Root]:
        """The root a stored row names, held for the block (``RootRetired`` when a rotation retired it)."""
        ...

    def writing(self) -> AbstractAsyncContextManager[Root]:
        """The active root, held until the new row is written."""
        ...


class _FixedRoot:
    def __init__(self, root: RootKey) -> None:
        self._root = SoftRoot(root)

    def current(self) -> Root:
        return self._root

    @asynccontextmanager
    async def using(self, root_key_id: str) -> AsyncIterator[Root]:
        yield self._root

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[Root]:
        yield self._root


class KmsApp:
    def __init__(
        self,
        *,
        store: KeyStore,
        root_key: RootKey | RootKeySource,
        scope: Scope,
        clock: Clock,
        aws_key_crypto_denied: frozenset[str] = DEFAULT_AWS_KEY_CRYPTO_DENIED,
    ) -> None:
        self._store = store
        self._roots: RootKeySource = _FixedRoot(root_key) if isinstance(root_key, RootKey) else root_key
        self.scope = scope
        self._clock = clock
        self._aws_key_crypto_denied = aws_key_crypto_denied
        self._accounts: dict[str, KmsApp] = {scope.account_id: self}

    def for_account(self, account: str) -> KmsApp:
        """This kms for the keys of ``account`` (keys, aliases and lists are per account)."""
        app = self._accounts.get(account)
        if app is None:
            scope = replace(self.scope, account_id=account)
            app = KmsApp(
                store=self._store.scoped(scope),
                root_key=self._roots,
                scope=scope,
                clock=self._clock,
                aws_key_crypto_denied=self._aws_key_crypto_denied,
            )
            app._accounts = self._accounts
            self._accounts[account] = app
        return app

    def for_call(self) -> KmsApp:
        """The app for the call in progress: the caller's account; Coffer's own services (no end caller)
        act in the deployment's account."""
        caller = current_caller()
        if caller is None or caller.kind is PrincipalKind.SERVICE:
            return self
        return self.for_account(caller.account)

    # --- key material ---------------------------------------------------------------------------------------

    def _binding(self, key_id: str, material_id: str, account: str | None = None) -> MaterialBinding:
        return MaterialBinding(
            account_id=account or self.scope.account_id,
            region=self.scope.region,
            key_id=key_id,
            material_id=material_id,
        )

    async def _new_material(
        self,
        root: Root,
        key_id: str,
        *,
        now: datetime,
        rotation_type: RotationType | None,
        account: str | None = None,
    ) -> Material:
        material_id = secrets.token_hex(blobs.MATERIAL_ID_SIZE)
        wrapped = await root.wrap(
            secrets.token_bytes(blobs.MATERIAL_SIZE), self._binding(key_id, material_id, account)
        )
        return Material(
            key_id=key_id,
            material_id=material_id,
            wrapped=wrapped,
            root_key_id=root.key_id,
            state=MaterialState.CURRENT,
            created_at=now,
            rotation_type=rotation_type,
            rotated_at=now if rotation_type is not None else None,
        )

    async def _unwrap(self, key: Key, material: Material) -> bytes:
        """The material's plaintext, under the root its row names. A row read just before a root rotation
        rewrapped it and retired the old root is read again (once)."""
        binding = self._binding(key.key_id, material.material_id, key.account_id)
        for attempt in range(2):
            try:
                async with self._roots.using(material.root_key_id) as root:
                    return await root.unwrap(material.wrapped, binding)
            except RootRetired:
                found = await self._store.find_for_decrypt(key.key_id, material.material_id)
                if attempt or found is None or found[1] is None:
                    break
                material = found[1]
            except UnwrapError:
                log.error(
                    "kms.unwrap_failed",
                    key_arn=key.arn,
                    key_material_id=material.material_id,
                    stored_root_key_id=material.root_key_id,
                )
                break
        raise errors.Internal(
            f"The key material of {key.arn} cannot be unwrapped with the configured root key."
        )

    async def _rotate(self, tx: KeyTx, key: Key, *, now: datetime, rotation_type: RotationType) -> Key:
        async with self._roots.writing() as root:
            material = await self._new_material(
                root, key.key_id, now=now, rotation_type=rotation_type, account=key.account_id
            )
            await tx.add_material(material)
        log.info(
            "kms.key_rotated", key_arn=key.arn, key_material_id=material.material_id, type=rotation_type.value
        )
        return replace(key, current_material_id=material.material_id)

    async def _rotate_if_overdue(self, tx: KeyTx, key: Key, *, now: datetime) -> Key:
        if key.rotation_enabled and key.next_rotation_at is not None and key.next_rotation_at <= now:
            key = await self._rotate(tx, key, now=now, rotation_type=RotationType.AUTOMATIC)
            key = replace(key, next_rotation_at=now + timedelta(days=key.rotation_period_days or 365))
        return key

    # --- identifiers ----------------------------------------------------------------------------------------

    def _key_id_only(self, value: str, field: str = "keyId") -> str:
        ref = parse_key_ref(v.key_id(value, field), self.scope, allow_alias=False)
        assert isinstance(ref, KeyIdRef)
        return ref.key_id

    def _not_found(self, key_id: str) -> errors.KmsNotFound:
        return errors.KmsNotFound(f"Key '{self.scope.key_arn(key_id)}' does not exist")

    def _alias_not_found(self, alias_name: str) -> errors.KmsNotFound:
        return errors.KmsNotFound(f"Alias {self.scope.alias_arn(alias_name)} is not found.")

    async def _resolve(self, value: str, *, field: str = "keyId") -> Key:
        """Any of the four forms → the key (creating a predefined AWS key on first reference)."""
        ref = parse_key_ref(v.key_id(value, field), self.scope, allow_alias=True)
        if isinstance(ref, KeyIdRef):
            key = await self._store.find_key(ref.key_id)
            if key is None:
                raise self._not_found(ref.key_id)
            return key
        key = await self._store.find_key_by_alias(ref.alias_name)
        if key is None:
            key = await self._ensure_predefined(ref)
        return key

    async def _ensure_predefined(self, ref: AliasRef) -> Key:
        """Create ``alias/aws/secretsmanager`` and its AWS-managed key in one transaction; concurrent first
        uses are settled by the unique constraints plus a re-read."""
        service = PREDEFINED_ALIASES.get(ref.alias_name)
        if service is None:
            raise self._alias_not_found(ref.alias_name)
        for _attempt in range(3):
            now = self._clock.now()
            key_id = str(uuid.uuid4())
            async with self._roots.writing() as root:
                material = await self._new_material(root, key_id, now=now, rotation_type=None)
                key = Key(
                    key_id=key_id,
                    arn=self.scope.key_arn(key_id),
                    account_id=self.scope.account_id,
                    region=self.scope.region,
                    description=DEFAULT_KEY_DESCRIPTION,
                    key_manager=KeyManager.AWS,
                    key_state=KeyState.ENABLED,
                    created_at=now,
                    current_material_id=material.material_id,
                    rotation_enabled=True,
                    rotation_period_days=AWS_MANAGED_ROTATION_DAYS,
                    next_rotation_at=now + timedelta(days=AWS_MANAGED_ROTATION_DAYS),
                    managed_service=service,
                )
                try:
                    async with self._store.transaction() as tx:
                        await tx.insert_key(key, material)
                        await tx.insert_alias(ref.alias_name, key_id, now)
                except errors.KmsAlreadyExists:
                    existing = await self._store.find_key_by_alias(ref.alias_name)
                    if existing is not None:
                        return existing
                    continue
            log.info("kms.aws_managed_key_created", key_arn=key.arn, alias=ref.alias_name)
            return key
        raise errors.Internal(f"Could not create the AWS managed key for {ref.alias_name}; try again.")

    async def _resolve_for_encrypt(self, value: str) -> tuple[Key, Material]:
        ref = parse_key_ref(v.key_id(value), self.scope, allow_alias=True)
        if isinstance(ref, KeyIdRef):
            found = await self._store.find_for_encrypt(key_id=ref.key_id)
            if found is None:
                raise self._not_found(ref.key_id)
            return found
        found = await self._store.find_for_encrypt(alias_name=ref.alias_name)
        if found is None:
            await self._ensure_predefined(ref)
            found = await self._store.find_for_encrypt(alias_name=ref.alias_name)
            if found is None:
                raise self._alias_not_found(ref.alias_name)
        return found

    async def _locked(self, tx: KeyTx, key_id: str) -> Key:
        key = await tx.lock_key(key_id)
        if key is None:
            raise self._not_found(key_id)
        return key

    def _check_caller(self, operation: Operation, key: Key, caller: str | None) -> None:
        if key.key_manager is KeyManager.AWS and caller in self._aws_key_crypto_denied:
            raise errors.AccessDenied(
                f"{key.arn} is an AWS managed key that only Secrets Manager may use: direct "
                f"kms:{operation.value} calls by {caller} are not allowed."
            )

    # --- authorization (key policies) -----------------------------------------------------------------------

    def key_policy_text(self, key: Key) -> str:
        """The key's policy document (AWS-managed keys: their service's fixed policy)."""
        if key.policy is not None:
            return key.policy
        if key.key_manager is KeyManager.AWS:
            return aws_managed_key_policy_text(
                key.account_id, key.region, key.managed_service or "secretsmanager"
            )
        return default_key_policy_text(key.account_id, self.scope.partition)

    def key_policy(self, key: Key) -> Policy:
        return _compiled(self.key_policy_text(key))

    def _authz(self, operation: Operation | str, key: Key) -> None:
        """Public calls (from the gateway) are decided on the key policy (AWS KMS's rule, coffer.core.policy
        .keypolicy). Calls from Coffer's own services (the store using a key on behalf of Secrets Manager) are
        decided by that service (the store's KeyPolicies) and pass here."""
        if current_peer() != PUBLIC_PEER:
            return
        caller = current_caller()
        if caller is None:
            raise errors.AccessDenied("The caller of this kms call is unknown.")
        if caller.kind is PrincipalKind.SERVICE:
            return  # Coffer's own services are trusted peers (the old rule: only the default key is refused)
        action = f"kms:{operation.value}" if isinstance(operation, Operation) else operation
        authorize_key(caller, action, key.arn, self.key_policy(key), key_account=key.account_id)

    def _authz_account(self, action: str) -> None:
        """Public calls without a key (CreateKey, ListKeys, ListAliases): the caller's identity policies, on
        the caller's own account (the app serving the call is the caller's account's: ``for_call``)."""
        if current_peer() != PUBLIC_PEER:
            return
        caller = current_caller()
        if caller is None:
            raise errors.AccessDenied("The caller of this kms call is unknown.")
        if caller.kind is not PrincipalKind.SERVICE:
            authorize(caller, action, "*", resource_account=caller.account)

    async def get_key_policy(self, *, key_id: str, policy_name: str | None = None) -> tuple[str, str]:
        name = _policy_name(policy_name)
        key = await self._resolve(key_id)
        self._authz("kms:GetKeyPolicy", key)
        return self.key_policy_text(key), name

    async def put_key_policy(
        self, *, key_id: str, policy: str, policy_name: str | None = None, bypass_lockout_check: bool = False
    ) -> None:
        _policy_name(policy_name)
        kid = self._key_id_only(key_id)
        compiled = parse_key_policy(policy)
        async with self._store.transaction() as tx:
            key = await self._locked(tx, kid)
            self._authz("kms:PutKeyPolicy", key)
            if key.key_manager is KeyManager.AWS:
                raise errors.AccessDenied(
                    f"{key.arn} is an AWS managed key: its key policy cannot be changed."
                )
            if key.key_state is KeyState.PENDING_DELETION:
                raise errors.KmsInvalidState(f"{key.arn} is pending deletion.")
            caller = current_caller()
            if not bypass_lockout_check and caller is not None and _human(caller):
                check_lockout(caller, key.arn, compiled, key_account=key.account_id)
            await tx.set_key_policy(key.key_id, policy)
            await tx.notify_key_changed(key.arn)
        log.info("kms.key_policy_put", key_arn=key.arn)

    async def key_for_service(self, *, key_arn: str) -> Key:
        """The key behind an ARN (in its own account) or an id/alias (in the caller's account), for Coffer's
        services (no authorization: peers only)."""
        parts = key_arn.split(":")
        app = self.for_account(parts[4]) if key_arn.startswith("arn:") and len(parts) > 5 else self.for_call()
        return await app._resolve(key_arn)

    # --- keys -----------------------------------------------------------------------------------------------

    async def create_key(
        self,
        *,
        description: str | None = None,
        key_usage: str | None = None,
        key_spec: str | None = None,
        customer_master_key_spec: str | None = None,
        origin: str | None = None,
        tags: Sequence[Tag] = (),
        multi_region: bool = False,
        policy: str | None = None,
        bypass_lockout_check: bool = False,
    ) -> Key:
        self._authz_account("kms:CreateKey")
        self._roots.current()  # new key material needs the root key
        compiled = parse_key_policy(policy) if policy is not None else None
        desc = v.description(description or "")
        if key_spec is not None and customer_master_key_spec is not None:
            raise errors.Validation(
                "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. "
                "CustomerMasterKeySpec is deprecated."
            )
        usage = v.enum(key_usage, "keyUsage", v.KEY_USAGES) if key_usage is not None else KEY_USAGE
        if key_spec is not None:
            spec = v.enum(key_spec, "keySpec", v.KEY_SPECS)
        elif customer_master_key_spec is not None:
            spec = v.enum(customer_master_key_spec, "customerMasterKeySpec", v.CUSTOMER_MASTER_KEY_SPECS)
        else:
            spec = KEY_SPEC
        key_origin = v.enum(origin, "origin", v.ORIGINS) if origin is not None else ORIGIN
        checked_tags = v.tags(tags)
        if usage != KEY_USAGE:
            raise errors.UnsupportedOperation(f"KeyUsage {usage} is not supported here; use {KEY_USAGE}.")
        if spec != KEY_SPEC:
            raise errors.UnsupportedOperation(f"KeySpec {spec} is not supported here; use {KEY_SPEC}.")
        if key_origin != ORIGIN:
            raise errors.UnsupportedOperation(f"Origin {key_origin} is not supported here; use {ORIGIN}.")
        now = self._clock.now()
        key_id = f"mrk-{secrets.token_hex(16)}" if multi_region else str(uuid.uuid4())
        async with self._roots.writing() as root:
            material = await self._new_material(root, key_id, now=now, rotation_type=None)
            key = Key(
                key_id=key_id,
                arn=self.scope.key_arn(key_id),
                account_id=self.scope.account_id,
                region=self.scope.region,
                description=desc,
                key_manager=KeyManager.CUSTOMER,
                key_state=KeyState.ENABLED,
                created_at=now,
                current_material_id=material.material_id,
                multi_region=multi_region,
                tags=checked_tags,
                policy=policy
                if policy is not None
                else default_key_policy_text(self.scope.account_id, self.scope.partition),
            )
            caller = current_caller()
            if compiled is not None and not bypass_lockout_check and _human(caller):
                check_lockout(caller, key.arn, compiled, key_account=key.account_id)
            async with self._store.transaction() as tx:
                await tx.insert_key(key, material)
        log.info("kms.key_created", key_arn=key.arn)
        return key

    async def describe_key(self, *, key_id: str) -> Key:
        key = await self._resolve(key_id)
        self._authz(Operation.DESCRIBE_KEY, key)
        check(Operation.DESCRIBE_KEY, key.key_state, key.key_manager, arn=key.arn)
        return key

    async def list_keys(
        self, *, limit: int | None = None, marker: str | None = None
    ) -> Page[tuple[str, str]]:
        n = v.limit(limit, default=100)
        after = v.decode_marker(marker, "keys")
        self._authz_account("kms:ListKeys")
        ids = await self._store.list_key_ids(after=after, limit=n + 1)
        page = ids[:n]
        return Page(
            items=tuple((kid, self.scope.key_arn(kid)) for kid in page),
            next_marker=v.encode_marker("keys", page[-1]) if len(ids) > n else None,
        )

    async def enable_key(self, *, key_id: str) -> None:
        kid = self._key_id_only(key_id)
        async with self._store.transaction() as tx:
            key = await self._locked(tx, kid)
            self._authz(Operation.ENABLE_KEY, key)
            check(Operation.ENABLE_KEY, key.key_state, key.key_manager, arn=key.arn)
            updated = await self._rotate_if_overdue(
                tx, replace(key, key_state=KeyState.ENABLED), now=self._clock.now()
            )
            await tx.update_key(updated)
            await tx.notify_key_changed(key.arn)
        log.info("kms.key_enabled", key_arn=key.arn)

    async def disable_key(self, *, key_id: str) -> None:
        kid = self._key_id_only(key_id)
        async with self._store.transaction() as tx:
            key = await self._locked(tx, kid)
            self._authz(Operation.DISABLE_KEY, key)
            check(Operation.DISABLE_KEY, key.key_state, key.key_manager, arn=key.arn)
            await tx.update_key(replace(key, key_state=KeyState.DISABLED))
            await tx.notify_key_changed(key.arn)
        log.info("kms.key_disabled", key_arn=key.arn)

    async def schedule_key_deletion(
        self, *, key_id: str, pending_window_in_days: int | None = None
    ) -> ScheduledDeletion:
        kid = self._key_id_only(key_id)
        window = v.pending_window(pending_window_in_days)
        async with self._store.transaction() as tx:
            key = await self._locked(tx, kid)
            self._authz(Operation.SCHEDULE_KEY_DELETION, key)
            check(Operation.SCHEDULE_KEY_DELETION, key.key_state, key.key_manager, arn=key.arn)
            updated = replace(
                key,
                key_state=KeyState.PENDING_DELETION,
                deletion_date=self._clock.now() + timedelta(days=window),
            )
            await tx.update_key(updated)
            await tx.notify_key_changed(key.arn)
        log.info("kms.key_deletion_scheduled", key_arn=key.arn, deletion_date=updated.deletion_date)
        return ScheduledDeletion(key=updated, pending_window_in_days=window)

    async def cancel_key_deletion(self, *, key_id: str) -> Key:
        kid = self._key_id_only(key_id)
        async with self._store.transaction() as tx:
            key = await self._locked(tx, kid)
            self._authz(Operation.CANCEL_KEY_DELETION, key)
            check(Operation.CANCEL_KEY_DELETION, key.key_state, key.key_manager, arn=key.arn)
            updated = replace(key, key_state=KeyState.DISABLED, deletion_date=None)
            updated = await self._rotate_if_overdue(tx, updated, now=self._clock.now())
            await tx.update_key(updated)
            await tx.notify_key_changed(key.arn)
        log.info("kms.key_deletion_cancelled", key_arn=key.arn)
        return updated

    # --- aliases --------------------------------------------------------------------------------------------

    def _unreserved(self, alias_name: str) -> str:
        if alias_name.startswith(RESERVED_ALIAS_PREFIX):
            raise errors.InvalidAliasName(
                f"{alias_name} is reserved: alias names beginning with {RESERVED_ALIAS_PREFIX} belong to AWS "
                "managed keys and cannot be created by callers."
            )
        return alias_name

    def _target_key_id(self, value: str) -> str:
        v.key_id(value, "targetKeyId")
        if is_alias_form(value):
            raise errors.Validation("Aliases must refer to keys. Not aliases")
        return self._key_id_only(value, "targetKeyId")

    async def create_alias(self, *, alias_name: str, target_key_id: str) -> None:
        name = self._unreserved(v.alias_name(alias_name))
        kid = self._target_key_id(target_key_id)
        async with self._store.transaction() as tx:
            key = await self._locked(tx, kid)
            self._authz(Operation.CREATE_ALIAS, key)
            check(Operation.CREATE_ALIAS, key.key_state, key.key_manager, arn=key.arn)
            if await tx.get_alias(name) is not None:
                raise errors.KmsAlreadyExists(
                    f"An alias with the name {self.scope.alias_arn(name)} already exists"
                )
            if await tx.count_aliases(kid) >= MAX_ALIASES_PER_KEY:
                raise errors.LimitExceeded(
                    f"{key.arn} already has {MAX_ALIASES_PER_KEY} aliases, the most a key may have."
                )
            await tx.insert_alias(name, kid, self._clock.now())
        log.info("kms.alias_created", alias=name, key_arn=key.arn)

    async def delete_alias(self, *, alias_name: str) -> None:
        # alias/aws/* names point at AWS-managed keys, which the gate protects (AccessDeniedException).
        name = v.alias_name(alias_name)
        async with self._store.transaction() as tx:
            alias = await tx.get_alias(name, for_update=True)
            if alias is None or alias.target_key_id is None:
                raise self._alias_not_found(name)
            key = await self._locked(tx, alias.target_key_id)
            self._authz(Operation.DELETE_ALIAS, key)
            check(Operation.DELETE_ALIAS, key.key_state, key.key_manager, arn=key.arn)
            await tx.delete_alias(name)
        log.info("kms.alias_deleted", alias=name, key_arn=key.arn)

    async def list_aliases(
        self, *, key_id: str | None = None, limit: int | None = None, marker: str | None = None
    ) -> Page[Alias]:
        n = v.limit(limit, default=50)
        kid: str | None = None
        if key_id is not None:
            kid = self._key_id_only(key_id)
            key = await self._store.find_key(kid)
            if key is None:
                raise self._not_found(kid)
            self._authz(Operation.LIST_ALIASES, key)
            check(Operation.LIST_ALIASES, key.key_state, key.key_manager, arn=key.arn)
        else:
            self._authz_account("kms:ListAliases")
        after = v.decode_marker(marker, "aliases")
        rows = await self._store.list_aliases(key_id=kid, after=after, limit=n + 1)
        if kid is None:
            # Predefined AWS aliases are listed, without a target, until their key exists, as AWS lists them.
            names = {a.alias_name for a in rows}
            for name in PREDEFINED_ALIASES:
                if (
                    (after is None or name > after)
                    and name not in names
                    and not await self._store.alias_exists(name)
                ):
                    rows.append(
                        Alias(alias_name=name, alias_arn=self.scope.alias_arn(name), target_key_id=None)
                    )
            rows.sort(key=lambda a: a.alias_name)
        page = rows[:n]
        return Page(
            items=tuple(page),
            next_marker=v.encode_marker("aliases", page[-1].alias_name) if len(rows) > n else None,
        )

    # --- rotation -------------------------------------------------------------------------------------------

    async def enable_key_rotation(self, *, key_id: str, rotation_period_in_days: int | None = None) -> None:
        kid = self._key_id_only(key_id)
        period = v.rotation_period(rotation_period_in_days)
        async with self._store.transaction() as tx:
            key = await self._locked(tx, kid)
            self._authz(Operation.ENABLE_KEY_ROTATION, key)
            check(Operation.ENABLE_KEY_ROTATION, key.key_state, key.key_manager, arn=key.arn)
            if key.rotation_enabled and key.rotation_period_days == period:
                return
            await tx.update_key(
                replace(
                    key,
                    rotation_enabled=True,
                    rotation_period_days=period,
                    next_rotation_at=self._clock.now() + timedelta(days=period),
                )
            )
        log.info("kms.rotation_enabled", key_arn=key.arn, period_days=period)

    async def disable_key_rotation(self, *, key_id: str) -> None:
        kid = self._key_id_only(key_id)
        async with self._store.transaction() as tx:
            key = await self._locked(tx, kid)
            self._authz(Operation.DISABLE_KEY_ROTATION, key)
            check(Operation.DISABLE_KEY_ROTATION, key.key_state, key.key_manager, arn=key.arn)
            await tx.update_key(
                replace(key, rotation_enabled=False, rotation_period_days=None, next_rotation_at=None)
            )
        log.info("kms.rotation_disabled", key_arn=key.arn)

    async def get_key_rotation_status(self, *, key_id: str) -> RotationStatus:
        kid = self._key_id_only(key_id)
        key = await self._store.find_key(kid)
        if key is None:
            raise self._not_found(kid)
        self._authz(Operation.GET_KEY_ROTATION_STATUS, key)
        check(Operation.GET_KEY_ROTATION_STATUS, key.key_state, key.key_manager, arn=key.arn)
        if key.key_state is KeyState.PENDING_DELETION or not key.rotation_enabled:
            return RotationStatus(key_arn=key.arn, enabled=False)
        return RotationStatus(
            key_arn=key.arn,
            enabled=True,
            period_days=key.rotation_period_days,
            next_rotation_at=key.next_rotation_at,
        )

    async def rotate_key_on_demand(self, *, key_id: str) -> Key:
        self._roots.current()
        kid = self._key_id_only(key_id)
        async with self._store.transaction() as tx:
            key = await self._locked(tx, kid)
            self._authz(Operation.ROTATE_KEY_ON_DEMAND, key)
            check(Operation.ROTATE_KEY_ON_DEMAND, key.key_state, key.key_manager, arn=key.arn)
            if key.on_demand_rotations >= MAX_ON_DEMAND_ROTATIONS:
                raise errors.LimitExceeded(
                    "The on-demand rotations limit has been reached for the given keyId. "
                    f"No more on-demand rotations can be performed for this key: {key.arn}"
                )
            rotated = await self._rotate(tx, key, now=self._clock.now(), rotation_type=RotationType.ON_DEMAND)
            rotated = replace(rotated, on_demand_rotations=key.on_demand_rotations + 1)
            await tx.update_key(rotated)
        return rotated

    # --- cryptographic operations ---------------------------------------------------------------------------

    def _audit(self, operation: Operation, key: Key, material_id: str, context: Mapping[str, str]) -> None:
        log.info(
            "kms.audit",
            operation=operation.value,
            key_arn=key.arn,
            key_material_id=material_id,
            encryption_context=dict(context),
        )

    @staticmethod
    def _check_algorithm(algorithm: str | None) -> None:
        if algorithm is not None and algorithm != ENCRYPTION_ALGORITHM:
            raise errors.InvalidParameter(
                f"Algorithm {algorithm} is incompatible with key spec {KEY_SPEC}.",
                code="InvalidKeyUsageException",
            )

    async def _seal(
        self,
        operation: Operation,
        value: str,
        plaintext: bytes,
        context: dict[str, str],
        caller: str | None,
        algorithm: str | None = None,
    ) -> tuple[Key, Material, bytes]:
        """Resolve → caller policy → state gate → usage → encrypt under the key's current material."""
        key, material = await self._resolve_for_encrypt(value)
        self._check_caller(operation, key, caller)
        self._authz(operation, key)
        check(operation, key.key_state, key.key_manager, arn=key.arn)
        self._check_algorithm(algorithm)
        raw = await self._unwrap(key, material)
        blob = blobs.seal_blob(
            key_id=key.key_id,
            material_id=bytes.fromhex(material.material_id),
            material=raw,
            plaintext=plaintext,
            context=context,
        )
        self._audit(operation, key, material.material_id, context)
        return key, material, blob

    async def generate_data_key(
        self,
        *,
        key_id: str,
        key_spec: str | None = None,
        number_of_bytes: int | None = None,
        encryption_context: Mapping[str, str] | None = None,
        caller: str | None = None,
    ) -> DataKey:
        self._roots.current()  # a sealed kms refuses before anything else
        length = v.data_key_length(key_spec=key_spec, number_of_bytes=number_of_bytes)
        context = v.encryption_context(encryption_context or {})
        plaintext = secrets.token_bytes(length)
        key, material, blob = await self._seal(
            Operation.GENERATE_DATA_KEY, key_id, plaintext, context, caller
        )
        return DataKey(
            key_arn=key.arn, ciphertext_blob=blob, plaintext=plaintext, key_material_id=material.material_id
        )

    async def encrypt(
        self,
        *,
        key_id: str,
        plaintext: bytes,
        encryption_context: Mapping[str, str] | None = None,
        encryption_algorithm: str | None = None,
        caller: str | None = None,
    ) -> Encrypted:
        self._roots.current()
        v.blob_length(plaintext, "plaintext", low=1, high=v.MAX_PLAINTEXT)
        context = v.encryption_context(encryption_context or {})
        algorithm = v.encryption_algorithm(encryption_algorithm)
        key, _material, blob = await self._seal(
            Operation.ENCRYPT, key_id, plaintext, context, caller, algorithm
        )
        return Encrypted(key_arn=key.arn, ciphertext_blob=blob)

    async def decrypt(
        self,
        *,
        ciphertext_blob: bytes,
        key_id: str | None = None,
        encryption_context: Mapping[str, str] | None = None,
        encryption_algorithm: str | None = None,
        caller: str | None = None,
    ) -> Decrypted:
        self._roots.current()
        v.blob_length(ciphertext_blob, "ciphertextBlob", low=1, high=v.MAX_CIPHERTEXT)
        context = v.encryption_context(encryption_context or {})
        algorithm = v.encryption_algorithm(encryption_algorithm)
        if key_id is not None:
            v.key_id(key_id)
        parsed = blobs.parse_blob(ciphertext_blob)
        if not is_key_id(parsed.key_id):
            raise errors.InvalidCiphertext()
        found = await self._store.find_for_decrypt(parsed.key_id, parsed.material_id_hex)
        if found is None:
            raise errors.AccessDenied(_NO_SUCH_CIPHERTEXT_KEY)
        key, material = found
        if key_id is not None:
            requested = await self._resolve(key_id)
            if requested.key_id != key.key_id:
                raise errors.IncorrectKey()
        self._check_caller(Operation.DECRYPT, key, caller)
        self._authz(Operation.DECRYPT, key)
        check(Operation.DECRYPT, key.key_state, key.key_manager, arn=key.arn)
        self._check_algorithm(algorithm)
        if material is None:
            raise errors.InvalidCiphertext()
        raw = await self._unwrap(key, material)
        plaintext = blobs.open_blob(parsed, material=raw, context=context)
        self._audit(Operation.DECRYPT, key, material.material_id, context)
        return Decrypted(key_arn=key.arn, plaintext=plaintext, key_material_id=material.material_id)

    # --- background maintenance -----------------------------------------------------------------------------

    async def run_maintenance(self, *, rotation_batch: int = 100) -> MaintenanceReport:
        """Purge keys whose DeletionDate has passed (key, aliases, material: crypto-shred) and rotate keys
        whose automatic rotation is due, in every account. Idempotent; safe to run from several instances."""
        purged: list[str] = []
        rotated: list[str] = []
        accounts = set(await self._store.accounts()) | {self.scope.account_id}
        for account in sorted(accounts):
            report = await self.for_account(account)._maintain(rotation_batch)
            purged.extend(report.purged)
            rotated.extend(report.rotated)
        return MaintenanceReport(purged=tuple(purged), rotated=tuple(rotated))

    async def _maintain(self, rotation_batch: int) -> MaintenanceReport:
        """run_maintenance for this app's account."""
        now = self._clock.now()
        async with self._store.transaction() as tx:
            purged = await tx.delete_due_keys(now)
            for kid in purged:
                await tx.notify_key_changed(self.scope.key_arn(kid))
        for kid in purged:
            log.info("kms.key_purged", key_arn=self.scope.key_arn(kid))
        rotated: list[str] = []
        try:
            self._roots.current()
        except errors.KmsSealed:  # sealed: purging goes on, rotations wait for the root key
            return MaintenanceReport(purged=tuple(purged), rotated=())
        for kid in await self._store.due_for_rotation(now, limit=rotation_batch):
            async with self._store.transaction() as tx:
                key = await tx.lock_key(kid)
                if key is None or key.key_state is not KeyState.ENABLED:
                    continue
                updated = await self._rotate_if_overdue(tx, key, now=now)
                if updated is not key:
                    await tx.update_key(updated)
                    rotated.append(kid)
        return MaintenanceReport(purged=tuple(purged), rotated=tuple(rotated))


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Policy:
    return parse_key_policy(text)


def _policy_name(name: str | None) -> str:
    if name is None or name == "":
        return DEFAULT_POLICY_NAME
    if name != DEFAULT_POLICY_NAME:
        raise errors.Validation("The only valid value for PolicyName is default.")
    return name


def _human(caller: Principal | None) -> TypeGuard[Principal]:
    """An end caller the lockout safety check applies to (not one of Coffer's own services)."""
    return caller is not None and caller.kind is not PrincipalKind.SERVICE

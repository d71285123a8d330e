"""The seal of the kms's root key (``COFFER_SEAL``).

``file`` (the default): the root key is a file read at start (``coffer.rootkey_file``); the kms is never
sealed and the operator calls only report that.

``shamir``: the root key lives in the kms database only encrypted (AES-256-GCM, table ``kms.seal``) under an
unseal key that exists in memory and as N SLIP-39 shares with threshold K (``coffer.crypto.shamir``), made by
``init`` and returned once, never stored. A kms starts sealed; ``unseal`` takes one share per call (a share
that fails its checksum or belongs to another split is refused by name and does not count; a repeated share
counts once); at K distinct shares the unseal key is combined, the root key decrypted and kept in memory, and
the shares given are forgotten. ``seal`` drops the root key from memory. While sealed every use of the root
key raises ``errors.KmsSealed``. The unseal key stays in memory while unsealed (a root rotation encrypts the
new root key under it).

``pkcs11``: the root key is a non-extractable AES-256 key in an HSM token (``coffer.kms.hsm``); CMK material
is wrapped and unwrapped inside the HSM. Never sealed; the key is generated in the token on first start.

The seal holds a *set* of roots by id: one active (wraps new material) and, while ``coffer operator
rotate-root`` or ``migrate-seal`` runs (``coffer.kms.rekey``), the old one too, so every row unwraps under the
root its ``root_key_id`` names. Uses go through ``using(root_key_id)`` / ``writing()`` leases, so a retired
root is destroyed only once nothing uses it.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import asyncpg
import structlog

from coffer.core import errors
from coffer.crypto import aead, shamir
from coffer.crypto.rootkey import ROOT_KEY_SIZE, MaterialBinding, RootKey

log = structlog.get_logger("coffer.kms")

UNSEAL_KEY_SIZE = 32
_ROOT_AAD = b"coffer/kms/seal/root-key/v1"


class SealMode(enum.Enum):
    FILE = "file"
    SHAMIR = "shamir"
    PKCS11 = "pkcs11"

    @classmethod
    def parse(cls, value: str) -> SealMode:
        try:
            return cls(value.strip().lower() or "file")
        except ValueError:
            raise ValueError(f"COFFER_SEAL must be one of file, shamir, pkcs11; got {value!r}") from None


class Root(Protocol):
    """A root key as the app uses it: wraps and unwraps CMK material (``UnwrapError`` when it does not
    authenticate)."""

    @property
    def key_id(self) -> str: ...
    async def wrap(self, material: bytes, binding: MaterialBinding) -> bytes: ...
    async def unwrap(self, wrapped: bytes, binding: MaterialBinding) -> bytes: ...


class SoftRoot:
    """A root key held in this process's memory (file and shamir seals)."""

    __slots__ = ("key",)

    def __init__(self, key: RootKey) -> None:
        self.key = key

    @property
    def key_id(self) -> str:
        return self.key.key_id

    async def wrap(self, material: bytes, binding: MaterialBinding) -> bytes:
        return self.key.wrap(material, binding)

    async def unwrap(self, wrapped: bytes, binding: MaterialBinding) -> bytes:
        return self.key.unwrap(wrapped, binding)

    def __repr__(self) -> str:
        return f"SoftRoot(key_id={self.key.key_id!r})"


class RootRetired(Exception):
    """The row was read under a root that a rotation has since retired: read it again."""


@dataclass(frozen=True, slots=True)
class RotationRecord:
    """A rotation (or migration) under way: rows move from the old root to the new one."""

    from_mode: SealMode
    to_mode: SealMode
    old_root_key_id: str
    new_root_key_id: str
    new_encrypted_root: bytes | None = None
    share_set_id: int | None = None
    key_shares: int | None = None
    key_threshold: int | None = None
    rewrapped: int = 0

    @property
    def kind(self) -> str:
        return "rotate-root" if self.from_mode is self.to_mode else "migrate-seal"


@dataclass(frozen=True, slots=True)
class SealRecord:
    """The stored half of the seal: the root key encrypted under the unseal key, and the share set."""

    share_set_id: int
    key_shares: int
    key_threshold: int
    encrypted_root: bytes
    root_key_id: str


@dataclass(frozen=True, slots=True)
class SealStatus:
    mode: SealMode
    initialized: bool
    sealed: bool
    threshold: int = 0
    shares: int = 0
    progress: int = 0
    root_key_id: str = ""
    #: "rotate-root" or "migrate-seal" while one runs, else ""
    rotation: str = ""
    rotation_to_mode: str = ""
    new_root_key_id: str = ""
    rewrapped: int = 0


class SealStore(Protocol):
    async def load(self) -> SealRecord | None: ...
    async def insert(self, record: SealRecord) -> bool:
        """Store the record unless one exists; False when another init came first."""
        ...

    async def root_key_ids(self) -> set[str]:
        """The root key ids the stored key material is wrapped under."""
        ...

    async def load_rotation(self) -> RotationRecord | None: ...


class PgSealStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def load(self) -> SealRecord | None:
        row = await self._pool.fetchrow(
            "SELECT share_set_id, key_shares, key_threshold, encrypted_root, root_key_id FROM kms.seal"
        )
        if row is None:
            return None
        return SealRecord(
            share_set_id=row["share_set_id"],
            key_shares=row["key_shares"],
            key_threshold=row["key_threshold"],
            encrypted_root=bytes(row["encrypted_root"]),
            root_key_id=row["root_key_id"],
        )

    async def insert(self, record: SealRecord) -> bool:
        status: str = await self._pool.execute(
            _INSERT_SEAL,
            record.share_set_id,
            record.key_shares,
            record.key_threshold,
            record.encrypted_root,
            record.root_key_id,
        )
        return status.endswith(" 1")

    async def root_key_ids(self) -> set[str]:
        rows = await self._pool.fetch("SELECT DISTINCT root_key_id FROM kms.key_materials")
        return {r["root_key_id"] for r in rows}

    async def load_rotation(self) -> RotationRecord | None:
        row = await self._pool.fetchrow(
            "SELECT from_mode, to_mode, old_root_key_id, new_root_key_id, new_encrypted_root, share_set_id,"
            " key_shares, key_threshold, rewrapped FROM kms.root_rotation"
        )
        if row is None:
            return None
        return RotationRecord(
            from_mode=SealMode(row["from_mode"]),
            to_mode=SealMode(row["to_mode"]),
            old_root_key_id=row["old_root_key_id"],
            new_root_key_id=row["new_root_key_id"],
            new_encrypted_root=bytes(row["new_encrypted_root"]) if row["new_encrypted_root"] else None,
            share_set_id=row["share_set_id"],
            key_shares=row["key_shares"],
            key_threshold=row["key_threshold"],
            rewrapped=row["rewrapped"],
        )


_INSERT_SEAL = """
    INSERT INTO kms.seal (mode, share_set_id, key_shares, key_threshold, encrypted_root, root_key_id)
    VALUES ('shamir', $1, $2, $3, $4, $5)
    ON CONFLICT (id) DO NOTHING
"""

OnChange = Callable[[SealStatus], Awaitable[None]]


def encrypt_root(unseal_key: bytes, root_secret: bytes) -> bytes:
    return aead.seal(unseal_key, root_secret, aad=_ROOT_AAD)


def decrypt_root(unseal_key: bytes, encrypted: bytes) -> bytes:
    return aead.open_sealed(unseal_key, encrypted, aad=_ROOT_AAD)


class Seal:
    """Holds the roots while unsealed; ``current()``, ``using()`` and ``writing()`` are what every use of a
    root key goes through."""

    def __init__(
        self,
        *,
        mode: SealMode,
        store: SealStore | None = None,
        root: RootKey | None = None,
        roots: list[Root] | None = None,
        active: str | None = None,
        on_change: OnChange | None = None,
    ) -> None:
        given = list(roots or ()) + ([SoftRoot(root)] if root is not None else [])
        if mode is not SealMode.SHAMIR and not given:
            raise ValueError(f"the {mode.value} seal needs its root key")
        if mode is SealMode.SHAMIR and (store is None or given):
            raise ValueError("the shamir seal needs a store and starts sealed")
        self.mode = mode
        self._store = store
        self._roots: dict[str, Root] = {r.key_id: r for r in given}
        self._active: str | None = active or (given[-1].key_id if given else None)
        self._retired: set[str] = set()
        self._leases: Counter[str] = Counter()
        self._released = asyncio.Condition()
        self._unseal_key: bytes | None = None
        self._record: SealRecord | None = None
        self._rotation: RotationRecord | None = None
        self._given: dict[int, shamir.ParsedShare] = {}
        self._lock = asyncio.Lock()
        self.on_change = on_change

    @classmethod
    def file(cls, root: RootKey) -> Seal:
        return cls(mode=SealMode.FILE, root=root)

    async def load(self) -> None:
        """Read the stored records (shamir mode: the kms stays sealed)."""
        if self._store is not None:
            self._record = await self._store.load()
            self._rotation = await self._store.load_rotation()

    # --- the roots ------------------------------------------------------------------------------------------

    @property
    def sealed(self) -> bool:
        return self._active is None

    def current(self) -> Root:
        """The active root (wraps new material); ``errors.KmsSealed`` while sealed."""
        active = self._active
        if active is None:
            raise errors.KmsSealed(self._sealed_message())
        return self._roots[active]

    def root_ids(self) -> set[str]:
        return set(self._roots)

    def _lease(self, root_key_id: str) -> Root:
        if self._active is None:
            raise errors.KmsSealed(self._sealed_message())
        root = self._roots.get(root_key_id)
        if root is None:
            if root_key_id in self._retired:
                raise RootRetired(root_key_id)
            raise errors.Internal(f"No root key {root_key_id} is loaded in the KMS.")
        self._leases[root_key_id] += 1
        return root

    async def _release(self, root_key_id: str) -> None:
        self._leases[root_key_id] -= 1
        if self._leases[root_key_id] <= 0:
            del self._leases[root_key_id]
            async with self._released:
                self._released.notify_all()

    @asynccontextmanager
    async def using(self, root_key_id: str) -> AsyncIterator[Root]:
        """The root that wraps a stored row (``RootRetired`` when a rotation retired it since the row was
        read); held until the block ends, so it is not destroyed under the caller."""
        root = self._lease(root_key_id)
        try:
            yield root
        finally:
            await self._release(root_key_id)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[Root]:
        """The active root, for new material: held until the row is written (a rotation that switches roots
        waits for these writers before it checks that no row is left under the old root)."""
        async with self.using(self.current().key_id) as root:
            yield root

    def add_root(self, root: Root, *, active: bool) -> None:
        self._roots[root.key_id] = root
        self._retired.discard(root.key_id)
        if active:
            self._active = root.key_id

    async def drain(self, root_key_id: str) -> None:
        """Wait until no caller holds ``root_key_id``."""
        async with self._released:
            await self._released.wait_for(lambda: self._leases.get(root_key_id, 0) == 0)

    async def retire(self, root_key_id: str) -> None:
        """Stop using a root (after a rotation) and wait until no caller holds it any more."""
        if self._roots.pop(root_key_id, None) is not None:
            self._retired.add(root_key_id)
        await self.drain(root_key_id)

    def set_rotation(self, record: RotationRecord | None) -> None:
        self._rotation = record

    def set_record(self, record: SealRecord | None) -> None:
        self._record = record

    @property
    def seal_record(self) -> SealRecord | None:
        return self._record

    @property
    def rotation(self) -> RotationRecord | None:
        return self._rotation

    @property
    def unseal_key(self) -> bytes:
        """The unseal key (shamir mode, while unsealed): a new root is stored encrypted under it."""
        if self._active is None:
            raise errors.KmsSealed(self._sealed_message())
        if self._unseal_key is None:
            raise errors.InvalidRequest(
                "This KMS process does not hold the unseal key (it was migrated to the shamir seal before a "
                "restart): restart it with COFFER_SEAL=shamir and unseal it first."
            )
        return self._unseal_key

    def set_unseal_key(self, unseal_key: bytes) -> None:
        self._unseal_key = unseal_key

    def _sealed_message(self) -> str:
        if self._record is None:
            return (
                "The KMS is sealed and not initialized: initialize it with `coffer operator init` "
                "(--key-shares N --key-threshold K)."
            )
        return (
            f"The KMS is sealed: unseal it with `coffer operator unseal` ({len(self._given)} of "
            f"{self._record.key_threshold} shares given)."
        )

    @property
    def reason(self) -> str:
        """Why the crypto service is not serving ("" while unsealed)."""
        return "" if self._active is not None else self._sealed_message()

    def status(self) -> SealStatus:
        record = self._record
        rotation = self._rotation
        active = self._active
        return SealStatus(
            mode=self.mode,
            initialized=self.mode is not SealMode.SHAMIR or record is not None,
            sealed=active is None,
            threshold=record.key_threshold if record else 0,
            shares=record.key_shares if record else 0,
            progress=len(self._given),
            root_key_id=(
                (rotation.old_root_key_id if rotation else active)
                if active is not None
                else (record.root_key_id if record else "")
            ),
            rotation=rotation.kind if rotation else "",
            rotation_to_mode=rotation.to_mode.value if rotation else "",
            new_root_key_id=rotation.new_root_key_id if rotation else "",
            rewrapped=rotation.rewrapped if rotation else 0,
        )

    async def changed(self) -> SealStatus:
        status = self.status()
        if self.on_change is not None:
            await self.on_change(status)
        return status

    def _shamir_store(self, operation: str) -> SealStore:
        if self.mode is not SealMode.SHAMIR or self._store is None:
            raise errors.InvalidRequest(
                f"The KMS runs in the '{self.mode.value}' seal mode: {operation} needs COFFER_SEAL=shamir."
            )
        return self._store

    # --- operations -----------------------------------------------------------------------------------------

    async def init(self, *, shares: int, threshold: int) -> tuple[list[str], SealStatus]:
        """Make the root key and the unseal key, store the root key encrypted, and return the unseal key's
        shares (never stored). Leaves the kms unsealed."""
        store = self._shamir_store("init")
        async with self._lock:
            if self._record is not None or await store.load() is not None:
                self._record = self._record or await store.load()
                raise errors.InvalidRequest("The KMS is already initialized.")
            foreign = await store.root_key_ids()
            if foreign:
                raise errors.InvalidRequest(
                    f"The KMS database already holds key material wrapped under root key id(s) "
                    f"{sorted(foreign)} (a deployment first run in another seal mode): move it to the shamir "
                    "mode with `coffer operator migrate-seal --to shamir` in that mode."
                )
            unseal_key = secrets.token_bytes(UNSEAL_KEY_SIZE)
            mnemonics = shamir.split(unseal_key, shares=shares, threshold=threshold)
            share_set_id = shamir.parse_share(mnemonics[0]).identifier
            root_secret = secrets.token_bytes(ROOT_KEY_SIZE)
            root = RootKey(root_secret)
            record = SealRecord(
                share_set_id=share_set_id,
                key_shares=shares,
                key_threshold=threshold,
                encrypted_root=encrypt_root(unseal_key, root_secret),
                root_key_id=root.key_id,
            )
            del root_secret
            if not await store.insert(record):
                self._record = await store.load()
                raise errors.InvalidRequest("The KMS is already initialized.")
            self._record = record
            self._unseal_key = unseal_key
            self.add_root(SoftRoot(root), active=True)
            self._given.clear()
            log.info("kms.seal_initialized", shares=shares, threshold=threshold, root_key_id=root.key_id)
            return mnemonics, await self.changed()

    async def unseal(self, share: str) -> SealStatus:
        """Take one share; at the threshold, combine and unseal. A share not valid raises ``InvalidShare``
        (naming it) and does not count; shares given while unsealed are ignored."""
        store = self._shamir_store("unseal")
        async with self._lock:
            if self._record is None:
                self._record = await store.load()
            record = self._record
            if record is None:
                raise errors.InvalidRequest(
                    "The KMS is not initialized: run `coffer operator init --key-shares N --key-threshold K`."
                )
            if self._active is not None:
                return self.status()
            parsed = shamir.parse_share(share)
            if parsed.identifier != record.share_set_id or parsed.threshold != record.key_threshold:
                raise errors.InvalidShare(
                    f"The unseal key share '{shamir.label(parsed.mnemonic)}' belongs to another set of "
                    "shares than this KMS's."
                )
            self._given.setdefault(parsed.index, parsed)
            if len(self._given) < record.key_threshold:
                log.info("kms.unseal_progress", progress=len(self._given), threshold=record.key_threshold)
                return await self.changed()
            given = list(self._given.values())
            self._given.clear()
            try:
                unseal_key = shamir.combine(given)
                root_secret = decrypt_root(unseal_key, record.encrypted_root)
            except (errors.InvalidShare, aead.AeadError, ValueError):
                await self.changed()
                raise errors.InvalidShare(
                    f"The {len(given)} unseal key shares given do not open this KMS's root key; progress was "
                    "reset: give the shares again."
                ) from None
            roots = [RootKey(root_secret)]
            del root_secret
            self._rotation = rotation = await store.load_rotation()
            if rotation is not None and rotation.new_encrypted_root is not None:
                roots.append(RootKey(decrypt_root(unseal_key, rotation.new_encrypted_root)))
            foreign = await store.root_key_ids() - {r.key_id for r in roots}
            if foreign:
                raise errors.Internal(
                    f"Stored key material is wrapped under root key id(s) {sorted(foreign)}, not under the "
                    f"unsealed root key {roots[0].key_id}."
                )
            self._unseal_key = unseal_key
            for root in roots:
                self.add_root(
                    SoftRoot(root), active=True
                )  # the last one (a rotation's new root) wraps new rows
            log.info("kms.unsealed", root_key_id=roots[0].key_id)
            return await self.changed()

    async def seal(self) -> SealStatus:
        """Drop the root keys and the unseal key from memory (and the shares given so far)."""
        self._shamir_store("seal")
        async with self._lock:
            self._active = None
            self._roots.clear()
            self._unseal_key = None
            self._given.clear()
            log.info("kms.sealed")
            return await self.changed()

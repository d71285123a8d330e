"""The seal of the kms's root key (``COFFER_SEAL``).

``file`` (the default): the root key is a file read at start (``coffer.rootkey_file``); the kms is never
sealed and the operator calls only report that.

``shamir``: the root key lives in the kms database only encrypted (AES-256-GCM, table ``kms.seal``) under an
unseal key that exists in memory and as N SLIP-39 shares with threshold K (``coffer.crypto.shamir``), made by
``init`` and returned once, never stored. A kms starts sealed; ``unseal`` takes one share per call (a share
that fails its checksum or belongs to another split is refused by name and does not count; a repeated share
counts once); at K distinct shares the unseal key is combined, the root key decrypted and kept in memory, and
the shares given are forgotten. ``seal`` drops the root key from memory. While sealed every use of the root
key raises ``errors.KmsSealed``.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import asyncpg
import structlog

from coffer.core import errors
from coffer.crypto import aead, shamir
from coffer.crypto.rootkey import ROOT_KEY_SIZE, RootKey

log = structlog.get_logger("coffer.kms")

UNSEAL_KEY_SIZE = 32
_ROOT_AAD = b"coffer/kms/seal/root-key/v1"


class SealMode(enum.Enum):
    FILE = "file"
    SHAMIR = "shamir"

    @classmethod
    def parse(cls, value: str) -> SealMode:
        try:
            return cls(value.strip().lower() or "file")
        except ValueError:
            raise ValueError(f"COFFER_SEAL must be one of file, shamir; got {value!r}") from None


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


class SealStore(Protocol):
    async def load(self) -> SealRecord | None: ...
    async def insert(self, record: SealRecord) -> bool:
        """Store the record unless one exists; False when another init came first."""
        ...

    async def root_key_ids(self) -> set[str]:
        """The root key ids the stored key material is wrapped under."""
        ...


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


_INSERT_SEAL = """
    INSERT INTO kms.seal (mode, share_set_id, key_shares, key_threshold, encrypted_root, root_key_id)
    VALUES ('shamir', $1, $2, $3, $4, $5)
    ON CONFLICT (id) DO NOTHING
"""

OnChange = Callable[[SealStatus], Awaitable[None]]


class Seal:
    """Holds the root key while unsealed; ``current()`` is what every use of the root key goes through."""

    def __init__(
        self,
        *,
        mode: SealMode,
        store: SealStore | None = None,
        root: RootKey | None = None,
        on_change: OnChange | None = None,
    ) -> None:
        if mode is SealMode.FILE and root is None:
            raise ValueError("the file seal needs the root key")
        if mode is SealMode.SHAMIR and (store is None or root is not None):
            raise ValueError("the shamir seal needs a store and starts sealed")
        self.mode = mode
        self._store = store
        self._root = root
        self._record: SealRecord | None = None
        self._given: dict[int, shamir.ParsedShare] = {}
        self._lock = asyncio.Lock()
        self.on_change = on_change

    @classmethod
    def file(cls, root: RootKey) -> Seal:
        return cls(mode=SealMode.FILE, root=root)

    async def load(self) -> None:
        """Read the stored record (shamir mode); the kms stays sealed."""
        if self._store is not None:
            self._record = await self._store.load()

    # --- the root key ---------------------------------------------------------------------------------------

    @property
    def sealed(self) -> bool:
        return self._root is None

    def current(self) -> RootKey:
        root = self._root
        if root is None:
            raise errors.KmsSealed(self._sealed_message())
        return root

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
        return "" if self._root is not None else self._sealed_message()

    def status(self) -> SealStatus:
        record = self._record
        root = self._root
        return SealStatus(
            mode=self.mode,
            initialized=self.mode is SealMode.FILE or record is not None,
            sealed=root is None,
            threshold=record.key_threshold if record else 0,
            shares=record.key_shares if record else 0,
            progress=len(self._given),
            root_key_id=root.key_id if root is not None else (record.root_key_id if record else ""),
        )

    async def _changed(self) -> SealStatus:
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
                    f"{sorted(foreign)} (a deployment first run in the file seal mode); moving it to the "
                    "shamir mode is not supported here."
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
                encrypted_root=aead.seal(unseal_key, root_secret, aad=_ROOT_AAD),
                root_key_id=root.key_id,
            )
            del unseal_key, root_secret
            if not await store.insert(record):
                self._record = await store.load()
                raise errors.InvalidRequest("The KMS is already initialized.")
            self._record = record
            self._root = root
            self._given.clear()
            log.info("kms.seal_initialized", shares=shares, threshold=threshold, root_key_id=root.key_id)
            return mnemonics, await self._changed()

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
            if self._root is not None:
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
                return await self._changed()
            given = list(self._given.values())
            self._given.clear()
            try:
                unseal_key = shamir.combine(given)
                root_secret = aead.open_sealed(unseal_key, record.encrypted_root, aad=_ROOT_AAD)
            except (errors.InvalidShare, aead.AeadError, ValueError):
                await self._changed()
                raise errors.InvalidShare(
                    f"The {len(given)} unseal key shares given do not open this KMS's root key; progress was "
                    "reset: give the shares again."
                ) from None
            root = RootKey(root_secret)
            del unseal_key, root_secret
            foreign = await store.root_key_ids() - {root.key_id}
            if foreign:
                raise errors.Internal(
                    f"Stored key material is wrapped under root key id(s) {sorted(foreign)}, not under the "
                    f"unsealed root key {root.key_id}."
                )
            self._root = root
            log.info("kms.unsealed", root_key_id=root.key_id)
            return await self._changed()

    async def seal(self) -> SealStatus:
        """Drop the root key from memory (and the shares given so far)."""
        self._shamir_store("seal")
        async with self._lock:
            self._root = None
            self._given.clear()
            log.info("kms.sealed")
            return await self._changed()

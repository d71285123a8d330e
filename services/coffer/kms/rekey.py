"""Root key rotation (``coffer operator rotate-root``) and seal migration (``coffer operator migrate-seal``).

Both move every key-material row from one root to another while the kms serves:

1. the new root is made durable first (file mode: ``<root key file>.next``, 0600; shamir: encrypted under the
   unseal key in the rotation row; pkcs11: a new key object in the token), then the rotation row
   (``kms.root_rotation``) is written, and the new root becomes the one that wraps new material;
2. rows still under the old root are rewrapped in batches, one transaction each (``FOR UPDATE``: a reader sees
   either the old wrap with the old root id or the new wrap with the new id, and both roots are loaded);
3. when none is left, after the writers that took the old root have written their rows, one transaction
   (holding ``kms.key_materials`` in SHARE mode, so no writer is half-way) checks again, records the new root
   as the deployment's (shamir: ``kms.seal``; pkcs11: ``kms.hsm_root``) and deletes the rotation row;
4. then the old root is destroyed: the file replaced by the new one (or removed, after a migration), the HSM
   object destroyed; in shamir mode the database row was overwritten in step 3.

A kms killed at any point resumes on restart (``recover_*`` in ``coffer.kms.__main__`` reload both roots from
the row; a shamir kms resumes once unsealed) and ends in the same state; leftovers of the last step are
finished at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import asyncpg
import structlog

from coffer.core import errors
from coffer.crypto import shamir
from coffer.crypto.rootkey import ROOT_KEY_SIZE, MaterialBinding, RootKey
from coffer.kms.hsm import Hsm, HsmRoot
from coffer.kms.seal import (
    UNSEAL_KEY_SIZE,
    PgSealStore,
    RotationRecord,
    Seal,
    SealMode,
    SealRecord,
    SealStatus,
    SoftRoot,
    encrypt_root,
)

log = structlog.get_logger("coffer.kms")


@dataclass(frozen=True, slots=True)
class MaterialRow:
    account_id: str
    region: str
    key_id: str
    material_id: str
    wrapped: bytes

    @property
    def binding(self) -> MaterialBinding:
        return MaterialBinding(
            account_id=self.account_id, region=self.region, key_id=self.key_id, material_id=self.material_id
        )


Rewrap = Callable[[MaterialRow], Awaitable[bytes]]


class RotationStore(Protocol):
    async def begin(self, record: RotationRecord) -> bool: ...
    async def rewrap_batch(self, record: RotationRecord, limit: int, rewrap: Rewrap) -> int: ...
    async def finish(
        self, record: RotationRecord, *, seal_record: SealRecord | None, hsm_label: str
    ) -> bool: ...
    async def hsm_root(self) -> str | None: ...
    async def insert_hsm_root(self, label: str, root_key_id: str) -> None: ...
    async def has_seal_record(self) -> bool: ...
    async def root_key_ids(self) -> set[str]: ...


class PgRotationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._seal_store = PgSealStore(pool)

    async def load_rotation(self) -> RotationRecord | None:
        return await self._seal_store.load_rotation()

    async def begin(self, record: RotationRecord) -> bool:
        status: str = await self._pool.execute(
            """
            INSERT INTO kms.root_rotation (from_mode, to_mode, old_root_key_id, new_root_key_id,
                new_encrypted_root, share_set_id, key_shares, key_threshold)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING
            """,
            record.from_mode.value,
            record.to_mode.value,
            record.old_root_key_id,
            record.new_root_key_id,
            record.new_encrypted_root,
            record.share_set_id,
            record.key_shares,
            record.key_threshold,
        )
        return status.endswith(" 1")

    async def rewrap_batch(self, record: RotationRecord, limit: int, rewrap: Rewrap) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                SELECT k.account_id, k.region, m.key_id, m.material_id, m.wrapped
                FROM kms.key_materials m JOIN kms.keys k ON k.key_id = m.key_id
                WHERE m.root_key_id = $1 ORDER BY m.key_id, m.material_id LIMIT $2 FOR UPDATE OF m
                """,
                record.old_root_key_id,
                limit,
            )
            updates = []
            for r in rows:
                row = MaterialRow(
                    r["account_id"], r["region"], r["key_id"], r["material_id"], bytes(r["wrapped"])
                )
                updates.append((row.key_id, row.material_id, await rewrap(row), record.new_root_key_id))
            if updates:
                await conn.executemany(
                    "UPDATE kms.key_materials SET wrapped = $3, root_key_id = $4"
                    " WHERE key_id = $1 AND material_id = $2",
                    updates,
                )
                await conn.execute("UPDATE kms.root_rotation SET rewrapped = rewrapped + $1", len(updates))
            return len(updates)

    async def finish(self, record: RotationRecord, *, seal_record: SealRecord | None, hsm_label: str) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            # waits for every transaction that has written a key-material row and keeps new ones out
            await conn.execute("LOCK TABLE kms.key_materials IN SHARE MODE")
            left = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM kms.key_materials WHERE root_key_id = $1)",
                record.old_root_key_id,
            )
            if left:
                return False
            new_id = record.new_root_key_id
            if record.to_mode is SealMode.SHAMIR:
                assert record.new_encrypted_root is not None
                if record.from_mode is SealMode.SHAMIR:
                    await conn.execute(
                        "UPDATE kms.seal SET encrypted_root = $1, root_key_id = $2",
                        record.new_encrypted_root,
                        new_id,
                    )
                else:
                    assert seal_record is not None
                    await conn.execute(
                        "INSERT INTO kms.seal (mode, share_set_id, key_shares, key_threshold, encrypted_root,"
                        " root_key_id) VALUES ('shamir', $1, $2, $3, $4, $5)",
                        seal_record.share_set_id,
                        seal_record.key_shares,
                        seal_record.key_threshold,
                        seal_record.encrypted_root,
                        new_id,
                    )
            elif record.to_mode is SealMode.PKCS11:
                await conn.execute(
                    "INSERT INTO kms.hsm_root (key_label, root_key_id) VALUES ($1, $2)"
                    " ON CONFLICT (id) DO UPDATE SET root_key_id = EXCLUDED.root_key_id",
                    hsm_label,
                    new_id,
                )
            await conn.execute("DELETE FROM kms.root_rotation")
            return True

    async def hsm_root(self) -> str | None:
        value: str | None = await self._pool.fetchval("SELECT root_key_id FROM kms.hsm_root")
        return value

    async def insert_hsm_root(self, label: str, root_key_id: str) -> None:
        await self._pool.execute(
            "INSERT INTO kms.hsm_root (key_label, root_key_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            label,
            root_key_id,
        )

    async def has_seal_record(self) -> bool:
        return bool(await self._pool.fetchval("SELECT EXISTS (SELECT 1 FROM kms.seal)"))

    async def root_key_ids(self) -> set[str]:
        rows = await self._pool.fetch("SELECT DISTINCT root_key_id FROM kms.key_materials")
        return {r["root_key_id"] for r in rows}


# --- the root key file and its successor --------------------------------------------------------------------


def next_file(root_file: Path) -> Path:
    return root_file.with_name(root_file.name + ".next")


def write_key_file(path: Path, secret: bytes) -> None:
    """Write ``secret`` to ``path`` (0600, atomically, fsynced with its directory)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secret)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_file(path: Path) -> None:
    if path.exists():
        path.unlink()
        _sync_dir(path.parent)
        log.info("kms.root_key_file_removed", path=str(path))


# --- the rotation -------------------------------------------------------------------------------------------


class RootRotator:
    """Starts, runs and resumes rotations and migrations of one kms (one at a time)."""

    def __init__(
        self,
        *,
        seal: Seal,
        store: RotationStore,
        root_file: Path,
        hsm: Hsm | None,
        hsm_label: str,
        batch: int = 50,
        stop_after: int = 0,
    ) -> None:
        if batch <= 0:
            raise ValueError("COFFER_ROOT_ROTATION_BATCH must be positive")
        self._seal = seal
        self._store = store
        self._root_file = root_file
        self._hsm = hsm
        self._hsm_label = hsm_label
        self._batch = batch
        self._stop_after = stop_after
        self._task: asyncio.Task[None] | None = None
        #: the unseal key of a migration to shamir started by this process (kept once it ends)
        self._migration_unseal_key: bytes | None = None
        self._lock = asyncio.Lock()

    # --- operations -----------------------------------------------------------------------------------------

    async def rotate(self, *, wait: bool) -> SealStatus:
        """A new root of the same kind; every row rewrapped under it; the old one destroyed."""
        async with self._lock:
            self._refuse_if_running()
            mode = self._seal.mode
            old = self._seal.current().key_id
            if mode is SealMode.PKCS11:
                new_root = HsmRoot(self._need_hsm(), await self._need_hsm().generate())
                record = RotationRecord(mode, mode, old, new_root.key_id)
                new: SoftRoot | HsmRoot = new_root
            else:
                secret = secrets.token_bytes(ROOT_KEY_SIZE)
                soft = SoftRoot(RootKey(secret))
                if mode is SealMode.FILE:
                    write_key_file(next_file(self._root_file), secret)
                    record = RotationRecord(mode, mode, old, soft.key_id)
                else:
                    encrypted = encrypt_root(self._seal.unseal_key, secret)
                    record = RotationRecord(mode, mode, old, soft.key_id, new_encrypted_root=encrypted)
                del secret
                new = soft
            await self._begin(record, new)
        return await self._maybe_wait(wait)

    async def migrate(
        self, *, to: SealMode, shares: int, threshold: int, wait: bool
    ) -> tuple[list[str], SealStatus]:
        """From the file seal to ``to``: every row rewrapped under the new seal's root; the root file removed.
        Returns the unseal key's shares (``to`` shamir; shown once)."""
        if self._seal.mode is not SealMode.FILE:
            raise errors.InvalidRequest(
                f"The KMS runs in the '{self._seal.mode.value}' seal mode: migrate-seal moves a deployment "
                "from the 'file' mode."
            )
        mnemonics: list[str] = []
        async with self._lock:
            self._refuse_if_running()
            old = self._seal.current().key_id
            if to is SealMode.SHAMIR:
                unseal_key = secrets.token_bytes(UNSEAL_KEY_SIZE)
                mnemonics = shamir.split(unseal_key, shares=shares, threshold=threshold)
                share_set_id = shamir.parse_share(mnemonics[0]).identifier
                secret = secrets.token_bytes(ROOT_KEY_SIZE)
                soft = SoftRoot(RootKey(secret))
                # the deployment is in the file mode until the migration ends: the new root is a file too
                write_key_file(next_file(self._root_file), secret)
                record = RotationRecord(
                    SealMode.FILE,
                    to,
                    old,
                    soft.key_id,
                    new_encrypted_root=encrypt_root(unseal_key, secret),
                    share_set_id=share_set_id,
                    key_shares=shares,
                    key_threshold=threshold,
                )
                self._migration_unseal_key = unseal_key
                del secret, unseal_key
                new: SoftRoot | HsmRoot = soft
            elif to is SealMode.PKCS11:
                hsm = self._need_hsm()
                new = HsmRoot(hsm, await hsm.generate())
                record = RotationRecord(SealMode.FILE, to, old, new.key_id)
            else:
                raise errors.InvalidParameter("migrate-seal --to must be 'shamir' or 'pkcs11'.")
            await self._begin(record, new)
        return mnemonics, await self._maybe_wait(wait)

    def _refuse_if_running(self) -> None:
        running = self._seal.rotation
        if running is not None:
            raise errors.InvalidRequest(
                f"A {running.kind} from root key {running.old_root_key_id} to {running.new_root_key_id} is "
                "under way; it resumes by itself (see `coffer operator status`)."
            )

    def _need_hsm(self) -> Hsm:
        if self._hsm is None:
            raise errors.InvalidRequest(
                "No HSM is configured: set COFFER_PKCS11_TOKEN_LABEL and COFFER_PKCS11_PIN (or _PIN_FILE)."
            )
        return self._hsm

    async def _begin(self, record: RotationRecord, new: SoftRoot | HsmRoot) -> None:
        if not await self._store.begin(record):
            raise errors.InvalidRequest("A root key rotation is already under way.")
        self._seal.add_root(new, active=True)
        self._seal.set_rotation(record)
        log.info(
            "kms.root_rotation_started",
            kind=record.kind,
            to_mode=record.to_mode.value,
            old_root_key_id=record.old_root_key_id,
            new_root_key_id=record.new_root_key_id,
        )
        self.resume()

    async def _maybe_wait(self, wait: bool) -> SealStatus:
        task = self._task
        if wait and task is not None:
            await asyncio.shield(task)
        return self._seal.status()

    def resume(self) -> None:
        """Run the rotation recorded in the seal, if any and not running (after a restart or an unseal)."""
        if self._seal.rotation is None or self._seal.sealed:
            return
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kms-root-rotation")

    async def _run(self) -> None:
        record = self._seal.rotation
        assert record is not None
        batches = 0
        while True:
            try:
                n = await self._store.rewrap_batch(record, self._batch, self._rewrap_one(record))
                batches += 1
                record = replace(record, rewrapped=record.rewrapped + n)
                self._seal.set_rotation(record)
                if self._stop_after and batches >= self._stop_after:
                    log.warning(
                        "kms.root_rotation_stopped", batches=batches, reason="COFFER_ROOT_ROTATION_STOP_AFTER"
                    )
                    await asyncio.Event().wait()
                if n:
                    continue
                await self._seal.drain(record.old_root_key_id)
                if await self._store.finish(
                    record, seal_record=self._migrated_seal_record(record), hsm_label=self._hsm_label
                ):
                    break
            except errors.KmsSealed:
                log.info("kms.root_rotation_paused", reason="sealed")
                return
            except errors.Unavailable as exc:
                log.warning("kms.root_rotation_retry", error=exc.message)
                await asyncio.sleep(1.0)
        await self._destroy_old(record)

    def _rewrap_one(self, record: RotationRecord) -> Rewrap:
        async def rewrap(row: MaterialRow) -> bytes:
            binding = row.binding
            async with self._seal.using(record.old_root_key_id) as old:
                plain = await old.unwrap(row.wrapped, binding)
            async with self._seal.using(record.new_root_key_id) as new:
                return await new.wrap(plain, binding)

        return rewrap

    def _migrated_seal_record(self, record: RotationRecord) -> SealRecord | None:
        if record.from_mode is not SealMode.FILE or record.to_mode is not SealMode.SHAMIR:
            return None
        assert record.new_encrypted_root is not None and record.share_set_id is not None
        assert record.key_shares is not None and record.key_threshold is not None
        return SealRecord(
            share_set_id=record.share_set_id,
            key_shares=record.key_shares,
            key_threshold=record.key_threshold,
            encrypted_root=record.new_encrypted_root,
            root_key_id=record.new_root_key_id,
        )

    async def _destroy_old(self, record: RotationRecord) -> None:
        await self._seal.retire(record.old_root_key_id)
        if record.from_mode is SealMode.FILE:
            nxt = next_file(self._root_file)
            if record.to_mode is SealMode.FILE:
                os.replace(nxt, self._root_file)
                _sync_dir(self._root_file.parent)
            else:
                remove_file(self._root_file)
                remove_file(nxt)
                self._seal.mode = record.to_mode
                self._seal.set_record(self._migrated_seal_record(record))
                if self._migration_unseal_key is not None:
                    self._seal.set_unseal_key(self._migration_unseal_key)
                    self._migration_unseal_key = None
        elif record.from_mode is SealMode.PKCS11:
            await self._need_hsm().destroy(record.old_root_key_id)
        current = self._seal.seal_record
        if (
            record.from_mode is SealMode.SHAMIR
            and current is not None
            and record.new_encrypted_root is not None
        ):
            self._seal.set_record(
                replace(current, encrypted_root=record.new_encrypted_root, root_key_id=record.new_root_key_id)
            )
        self._seal.set_rotation(None)
        log.info(
            "kms.root_rotation_done",
            kind=record.kind,
            to_mode=record.to_mode.value,
            old_root_key_id=record.old_root_key_id,
            new_root_key_id=record.new_root_key_id,
            rewrapped=record.rewrapped,
        )
        await self._seal.changed()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

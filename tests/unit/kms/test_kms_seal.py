"""The shamir seal, pure: splitting and combining the unseal key through shamir-mnemonic, corrupted shares
named and not counted, and the Seal state machine over an in-memory record store."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from coffer.core import errors
from coffer.crypto import shamir
from coffer.crypto.rootkey import MaterialBinding, RootKey
from coffer.kms.seal import RootRetired, RotationRecord, Seal, SealMode, SealRecord, SoftRoot
from coffer.testing.shares import corrupt_share

# --- the library wrapper ------------------------------------------------------------------------------------


def test_any_threshold_of_shares_recovers_the_secret() -> None:
    secret = secrets.token_bytes(32)
    shares = shamir.split(secret, shares=5, threshold=3)
    assert len(shares) == 5 and len(set(shares)) == 5
    parsed = [shamir.parse_share(s) for s in shares]
    assert {p.index for p in parsed} == {0, 1, 2, 3, 4}
    assert {p.threshold for p in parsed} == {3}
    assert len({p.identifier for p in parsed}) == 1
    for chosen in (parsed[:3], parsed[2:], [parsed[0], parsed[2], parsed[4]]):
        assert shamir.combine(chosen) == secret


def test_fewer_shares_than_the_threshold_do_not_combine() -> None:
    shares = [shamir.parse_share(s) for s in shamir.split(secrets.token_bytes(32), shares=5, threshold=3)]
    with pytest.raises(errors.InvalidShare, match="do not combine"):
        shamir.combine(shares[:2])


def test_a_corrupted_share_is_named_by_its_words() -> None:
    share = shamir.split(secrets.token_bytes(32), shares=3, threshold=2)[1]
    bad = corrupt_share(share)
    with pytest.raises(errors.InvalidShare) as info:
        shamir.parse_share(bad)
    assert shamir.label(bad) in info.value.message
    assert "checksum" in info.value.message
    assert info.value.code == "InvalidUnsealShareException"


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda s: s + " zzzz", "word"),
        (lambda s: " ".join(s.split()[:-2]), "is not valid"),
        (lambda s: " ".join(s.split()[:10]), "length"),
        (lambda s: "", "empty"),
    ],
)
def test_malformed_shares_are_refused(mangle: object, reason: str) -> None:
    share = shamir.split(secrets.token_bytes(32), shares=3, threshold=2)[0]
    with pytest.raises(errors.InvalidShare, match=reason):
        shamir.parse_share(mangle(share))  # type: ignore[operator]


def test_whitespace_and_case_do_not_matter() -> None:
    share = shamir.split(secrets.token_bytes(32), shares=3, threshold=2)[0]
    assert shamir.parse_share("  " + share.upper().replace(" ", "   ") + "\n").mnemonic == share


@pytest.mark.parametrize(("n", "k"), [(0, 0), (17, 3), (3, 4), (3, 0), (3, 1)])
def test_bad_share_counts_are_refused(n: int, k: int) -> None:
    with pytest.raises(errors.InvalidParameter):
        shamir.split(secrets.token_bytes(32), shares=n, threshold=k)


def test_one_of_one_is_allowed() -> None:
    secret = secrets.token_bytes(32)
    (share,) = shamir.split(secret, shares=1, threshold=1)
    assert shamir.combine([shamir.parse_share(share)]) == secret


# --- the Seal state machine ---------------------------------------------------------------------------------


class MemorySealStore:
    def __init__(self) -> None:
        self.record: SealRecord | None = None
        self.material_roots: set[str] = set()

    async def load(self) -> SealRecord | None:
        return self.record

    async def insert(self, record: SealRecord) -> bool:
        if self.record is not None:
            return False
        self.record = record
        return True

    async def root_key_ids(self) -> set[str]:
        return set(self.material_roots)

    async def load_rotation(self) -> RotationRecord | None:
        return None


BINDING = MaterialBinding(account_id="0", region="r", key_id="k", material_id="m")


async def test_init_unseal_seal_cycle() -> None:
    store = MemorySealStore()
    seal = Seal(mode=SealMode.SHAMIR, store=store)
    await seal.load()
    with pytest.raises(errors.KmsSealed, match="not initialized"):
        seal.current()
    shares, status = await seal.init(shares=5, threshold=3)
    assert len(shares) == 5 and not status.sealed and status.threshold == 3 and status.shares == 5
    root = seal.current()
    wrapped = await root.wrap(b"m" * 32, BINDING)
    assert store.record is not None and store.record.root_key_id == root.key_id

    # a restart: a new Seal over the same record starts sealed
    seal = Seal(mode=SealMode.SHAMIR, store=store)
    await seal.load()
    with pytest.raises(errors.KmsSealed) as info:
        seal.current()
    assert info.value.message == (
        "The KMS is sealed: unseal it with `coffer operator unseal` (0 of 3 shares given)."
    )
    assert (await seal.unseal(shares[0])).progress == 1
    assert (await seal.unseal(shares[0])).progress == 1  # a repeated share counts once
    assert (await seal.unseal(shares[3])).progress == 2
    with pytest.raises(errors.KmsSealed, match=r"\(2 of 3 shares given\)"):
        seal.current()
    with pytest.raises(errors.InvalidShare, match="checksum"):
        await seal.unseal(corrupt_share(shares[4]))
    assert seal.status().progress == 2 and seal.sealed
    status = await seal.unseal(shares[4])
    assert not status.sealed and status.progress == 0
    assert await seal.current().unwrap(wrapped, BINDING) == b"m" * 32

    status = await seal.seal()
    assert status.sealed
    with pytest.raises(errors.KmsSealed):
        seal.current()


async def test_a_share_of_another_init_is_refused_and_does_not_count() -> None:
    store, other = MemorySealStore(), MemorySealStore()
    seal, foreign = Seal(mode=SealMode.SHAMIR, store=store), Seal(mode=SealMode.SHAMIR, store=other)
    shares, _ = await seal.init(shares=3, threshold=2)
    foreign_shares, _ = await foreign.init(shares=3, threshold=2)
    await seal.seal()
    with pytest.raises(errors.InvalidShare, match="another set of shares"):
        await seal.unseal(foreign_shares[0])
    assert seal.status().progress == 0
    await seal.unseal(shares[1])
    assert not (await seal.unseal(shares[2])).sealed


async def test_init_is_refused_twice_and_over_file_mode_material() -> None:
    store = MemorySealStore()
    seal = Seal(mode=SealMode.SHAMIR, store=store)
    await seal.init(shares=2, threshold=2)
    with pytest.raises(errors.InvalidRequest, match="already initialized"):
        await seal.init(shares=2, threshold=2)
    used = MemorySealStore()
    used.material_roots = {"0123456789abcdef"}
    with pytest.raises(errors.InvalidRequest, match="another seal mode"):
        await Seal(mode=SealMode.SHAMIR, store=used).init(shares=2, threshold=2)
    assert used.record is None


async def test_the_file_seal_is_never_sealed_and_refuses_the_operations() -> None:
    root = RootKey.generate()
    seal = Seal.file(root)
    assert seal.current().key_id == root.key_id and not seal.status().sealed and seal.status().initialized
    for call in (seal.seal(), seal.unseal("x"), seal.init(shares=3, threshold=2)):
        with pytest.raises(errors.InvalidRequest, match="COFFER_SEAL=shamir"):
            await call


def test_seal_mode_parsing() -> None:
    assert SealMode.parse("") is SealMode.FILE
    assert SealMode.parse("Shamir") is SealMode.SHAMIR
    assert SealMode.parse("pkcs11") is SealMode.PKCS11
    with pytest.raises(ValueError, match="COFFER_SEAL"):
        SealMode.parse("vault")


def test_shares_are_named_by_their_public_words_only() -> None:
    shares = shamir.split(secrets.token_bytes(32), shares=5, threshold=3)
    labels = {shamir.label(s) for s in shares}
    assert len(labels) == 5  # the member index is in the first four words
    for share, name in zip(shares, map(shamir.label, shares), strict=True):
        assert name == " ".join(share.split()[:4]) + " ..."


async def test_a_retired_root_is_refused_by_name_and_destroyed_only_once_released() -> None:
    old, new = RootKey.generate(), RootKey.generate()
    seal = Seal(mode=SealMode.FILE, roots=[SoftRoot(old)])
    seal.add_root(SoftRoot(new), active=True)  # a rotation began: new material under the new root
    assert seal.current().key_id == new.key_id and seal.root_ids() == {old.key_id, new.key_id}
    async with seal.writing() as root:
        assert root.key_id == new.key_id
    wrapped = await SoftRoot(old).wrap(b"m" * 32, BINDING)
    released = asyncio.Event()

    async def reader() -> bytes:
        async with seal.using(old.key_id) as root:
            await released.wait()  # a read under the old root still running when the rotation ends
            return await root.unwrap(wrapped, BINDING)

    read = asyncio.create_task(reader())
    await asyncio.sleep(0)
    retire = asyncio.create_task(seal.retire(old.key_id))
    await asyncio.sleep(0)
    assert not retire.done()  # waits for the reader
    with pytest.raises(RootRetired):  # a row read under the old root before the rewrap: read it again
        async with seal.using(old.key_id):
            pass
    released.set()
    assert await read == b"m" * 32
    await retire
    assert seal.root_ids() == {new.key_id}
    with pytest.raises(errors.Internal, match="No root key"):
        async with seal.using("0000000000000000"):
            pass

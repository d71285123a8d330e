"""Shamir secret sharing of the kms's unseal key, through ``shamir-mnemonic`` (SLIP-39, Trezor's reference).

One group, K of N members, no passphrase (a wrong passphrase would give other bytes silently). Each share is a
mnemonic of words whose last three are an RS1024 checksum, so a changed, swapped, unknown or missing word is
detected when the share is read (``parse_share``) and the share is refused by name; a valid share of another
split is refused when its identifier differs; shares of the same identifier that do not belong together are
caught by the 4-byte digest SLIP-39 keeps in the secret (``combine``). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import shamir_mnemonic
from shamir_mnemonic import MnemonicError, Share

from coffer.core import errors

#: SLIP-39 allows at most 16 members in a group.
MAX_SHARES = 16
#: Iteration exponent of SLIP-39's passphrase cipher: 0 is the fastest (no passphrase is used anyway).
_ITERATION_EXPONENT = 0


@dataclass(frozen=True, slots=True)
class ParsedShare:
    """A share that passed its checksum: which split it belongs to (``identifier``), its member index and
    the threshold it was made with."""

    mnemonic: str
    identifier: int
    index: int
    threshold: int


def label(share: str) -> str:
    """How a share is named in errors and logs: its first four words, which encode only public parameters
    (the split's identifier, the threshold and the share's member index), never the secret part or its
    checksum."""
    words = share.split()
    return " ".join(words[:4]) + (" ..." if len(words) > 4 else "")


def _normalise(share: str) -> str:
    return " ".join(share.lower().split())


def split(secret: bytes, *, shares: int, threshold: int) -> list[str]:
    """``secret`` (an even number of bytes, at least 16) as ``shares`` mnemonics of which any ``threshold``
    recover it."""
    if not 1 <= shares <= MAX_SHARES:
        raise errors.InvalidParameter(f"The number of key shares must be between 1 and {MAX_SHARES}.")
    if not 1 <= threshold <= shares:
        raise errors.InvalidParameter("The key threshold must be between 1 and the number of key shares.")
    if threshold == 1 and shares > 1:
        raise errors.InvalidParameter(
            "A key threshold of 1 with several shares would make every share the whole key: use a threshold "
            "of at least 2, or a single share."
        )
    groups = shamir_mnemonic.generate_mnemonics(
        1, [(threshold, shares)], secret, extendable=True, iteration_exponent=_ITERATION_EXPONENT
    )
    return list(groups[0])


def parse_share(share: str) -> ParsedShare:
    """Check one share's words and checksum; ``errors.InvalidShare`` names the share that is not valid."""
    mnemonic = _normalise(share)
    if not mnemonic:
        raise errors.InvalidShare("The unseal key share is empty.")
    try:
        parsed = Share.from_mnemonic(mnemonic)
    except MnemonicError as exc:
        raise errors.InvalidShare(
            f"The unseal key share '{label(mnemonic)}' is not valid: {_reason(exc)}"
        ) from None
    if parsed.group_count != 1:
        raise errors.InvalidShare(
            f"The unseal key share '{label(mnemonic)}' belongs to a multi-group split, not to this kms."
        )
    return ParsedShare(
        mnemonic=mnemonic,
        identifier=parsed.identifier,
        index=parsed.index,
        threshold=parsed.member_threshold,
    )


def _reason(exc: MnemonicError) -> str:
    # The library's messages quote the share's first five words (the same for every share): say it plainly.
    text = str(exc)
    if "checksum" in text:
        return "its checksum does not match (a word is wrong, swapped or missing)"
    return text.rstrip(".")


def combine(shares: Sequence[ParsedShare]) -> bytes:
    """The secret from exactly a threshold of distinct shares of one split."""
    try:
        secret: bytes = shamir_mnemonic.combine_mnemonics([s.mnemonic for s in shares])
    except MnemonicError as exc:
        raise errors.InvalidShare(f"The unseal key shares do not combine: {_reason(exc)}") from None
    return secret

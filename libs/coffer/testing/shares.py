"""Test helper for Shamir key shares (``coffer.crypto.shamir``)."""

from __future__ import annotations


def corrupt_share(share: str, position: int = 5) -> str:
    """``share`` with one word replaced by another valid word: it still parses, its checksum no longer
    matches."""
    words = share.split()
    words[position] = "academic" if words[position] != "academic" else "acid"
    return " ".join(words)

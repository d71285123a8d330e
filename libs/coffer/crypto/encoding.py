"""Canonical, unambiguous byte encodings used as associated data. Pure."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

_U32 = struct.Struct(">I")


def length_prefixed(parts: Iterable[bytes]) -> bytes:
    """Concatenate ``parts``, each preceded by its 4-byte big-endian length (so no two inputs collide)."""
    out = bytearray()
    for part in parts:
        out += _U32.pack(len(part))
        out += part
    return bytes(out)


def encode_strings(*parts: str) -> bytes:
    """``length_prefixed`` over the UTF-8 bytes of each string."""
    return length_prefixed(p.encode("utf-8") for p in parts)


def encode_context(context: Mapping[str, str]) -> bytes:
    """The canonical encoding of an encryption context: pairs sorted by the UTF-8 bytes of the key, each key
    and value prefixed by its 4-byte big-endian length. ``{"ab": "c"}`` and ``{"a": "bc"}`` encode
    differently; an empty map encodes to ``b""``."""
    pairs = sorted((k.encode("utf-8"), v.encode("utf-8")) for k, v in context.items())
    return length_prefixed(item for pair in pairs for item in pair)

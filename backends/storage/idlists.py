"""Token-ID lists as compact bytes, and one list as a change of another.

A prompt is stored as the part it shares with an earlier prompt (its length,
``keep``) and what follows (``add``): ``ids == base[:keep] + add``. The same
form stores the IDs a model captured against the prompt it was sent. So each
stored turn costs the tokens it added, not the whole conversation again.

Layout of one blob::

    byte 0      the width of each ID in bytes (2, 4 or 8), | ZLIB when the IDs are compressed
    varint      keep
    the rest    ``add``: little-endian integers of that width (unsigned for 2 and 4, signed for 8)

Fixed-width integers go through ``array`` (C speed, both ways), which matters
because a conversation is rebuilt turn by turn from its first prompt; the
width is the narrowest that holds every ID of the list, so a 49k vocabulary
takes 2 bytes an ID and a 150k one 4. Long lists (a first prompt, a pasted
document) are zlib-compressed when that makes them smaller.
"""

from __future__ import annotations

import sys
import zlib
from array import array

from backends.core.sequences import common_prefix

#: Flag in byte 0: the IDs are zlib-compressed.
ZLIB = 0x80
#: Compressing shorter payloads than this saves nothing worth the time.
_COMPRESS_FROM = 512
_TYPECODES = {2: "H", 4: "I", 8: "q"}
_LITTLE = sys.byteorder == "little"


def _width(ids) -> int:
    if not ids:
        return 2
    low, high = min(ids), max(ids)
    if low >= 0 and high < 1 << 16:
        return 2
    if low >= 0 and high < 1 << 32:
        return 4
    return 8  # negative or huge: not token IDs as anyone makes them, but kept exactly all the same


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(blob: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = blob[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def pack(keep: int, add) -> bytes:
    """``keep`` and the IDs that follow as one blob."""
    width = _width(add)
    numbers = array(_TYPECODES[width], add)
    if not _LITTLE:
        numbers.byteswap()
    payload = numbers.tobytes()
    head = width
    if len(payload) >= _COMPRESS_FROM:
        packed = zlib.compress(payload, 6)
        if len(packed) < len(payload):
            payload, head = packed, width | ZLIB
    return bytes([head]) + _varint(keep) + payload


def unpack(blob: bytes) -> tuple[int, array]:
    """The ``keep`` and the added IDs (as an ``array``) of a blob from ``pack``."""
    head = blob[0]
    keep, at = _read_varint(blob, 1)
    payload = blob[at:]
    if head & ZLIB:
        payload = zlib.decompress(payload)
    numbers = array(_TYPECODES[head & ~ZLIB & 0x7F])
    numbers.frombytes(payload)
    if not _LITTLE:
        numbers.byteswap()
    return keep, numbers


def as_wide(ids) -> array:
    """IDs as a signed 64-bit array, the one form lists are rebuilt in (slices and joins stay in C)."""
    return ids if isinstance(ids, array) and ids.typecode == "q" else array("q", ids)


def encode(ids, base) -> bytes:
    """``ids`` as the change of ``base`` (None: stored whole)."""
    ids = as_wide(ids)
    keep = common_prefix(ids, base) if base is not None else 0
    return pack(keep, ids[keep:])


def decode(blob: bytes, base) -> array:
    """The IDs of ``encode``'s blob, given the same ``base`` (as an ``array('q')``)."""
    keep, add = unpack(blob)
    if keep == 0:
        return as_wide(add)
    if base is None or keep > len(base):
        raise ValueError(f"the stored IDs start from {keep} IDs of a prompt that has {0 if base is None else len(base)}")
    return base[:keep] + as_wide(add)

"""Units shown to people: byte sizes and changes, and sizes parsed from text."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: int | float | None) -> str:
    """Binary units with one decimal: ``format_bytes(566_440_000) == '540.2 MiB'``; None is '—'."""
    if n is None:
        return "—"
    sign = "-" if n < 0 else ""
    value = float(abs(n))
    if value < 1024:
        return f"{sign}{int(value)} B"
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if round(value, 1) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{sign}{value:.1f} {_UNITS[unit]}"


def format_change(n: int | float | None) -> str:
    """Like format_bytes with an explicit sign, for per-turn changes: '+12.0 MiB'."""
    if n is None:
        return "—"
    return ("+" if n >= 0 else "") + format_bytes(n)


_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
               "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_size(text: str) -> int:
    """'20GiB', '20GB', '1.5G', '512MiB', '1024' -> bytes (G/GiB are binary, GB decimal)."""
    value = str(text).strip().replace(" ", "")
    digits = value.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    unit = value[len(digits):].lower()
    if unit not in _SIZE_UNITS or not digits:
        raise ValueError(value)
    number = float(digits)
    if number < 0:
        raise ValueError(value)
    return int(number * _SIZE_UNITS[unit])

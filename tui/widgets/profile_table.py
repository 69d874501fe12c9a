"""A memory profile as text: the table and the curves, shared by ``llm-tui profile`` and the memory screen."""

from __future__ import annotations

from typing import Sequence

from rich.style import Style

from backends.core.units import format_bytes
from backends.profile.measure import ProfileRow

from .plot import Series

_SHORT = ("context", "peak", "KV cache", "KV/token", "prefill tok/s", "decode tok/s")
_WIDE = ("context", "peak", "over base", "KV cache", "KV/token", "KV estimate", "prefill tok/s", "decode tok/s")


def _rate(value) -> str:
    return f"{value:,.1f}" if isinstance(value, (int, float)) else "—"


def _cells(row: ProfileRow, wide: bool) -> tuple[str, ...]:
    label = f"{row.context_tokens:,}"
    if row.error:
        return (label, row.error)
    per_token = row.kv_bytes_per_token
    if per_token is None and row.kv_bytes is not None and row.context_tokens:
        per_token = row.kv_bytes / row.context_tokens
    if not wide:
        return (label, format_bytes(row.peak_bytes), format_bytes(row.kv_bytes), format_bytes(per_token),
                _rate(row.prefill_tok_s), _rate(row.decode_tok_s))
    over = row.peak_bytes - row.base_bytes if row.peak_bytes is not None and row.base_bytes is not None else None
    return (label, format_bytes(row.peak_bytes), format_bytes(over), format_bytes(row.kv_bytes),
            format_bytes(per_token), format_bytes(row.kv_estimate_bytes), _rate(row.prefill_tok_s),
            _rate(row.decode_tok_s))


def profile_table(rows: Sequence[ProfileRow], max_rows: int | None = 6, *, wide: bool = False) -> list[str]:
    """The profile as a table: context, peak, KV cache, KV per token, prefill and decode
    tokens/s (``wide`` adds the peak over the base and the KV estimate); a row that failed
    (out of memory) is its context and the error. More rows than ``max_rows``: the first,
    a line saying how many are left out, the last ones."""
    header = _WIDE if wide else _SHORT
    cells: list[tuple[str, ...]] = [header, *(_cells(row, wide) for row in rows)]
    skipped = 0
    if max_rows is not None and len(cells) - 1 > max(max_rows, 2):
        keep = max(max_rows, 2) - 1
        skipped = len(cells) - 1 - keep
        cells = cells[:2] + cells[len(cells) - keep + 1:]
    widths = [max(len(line[i]) for line in cells if len(line) == len(header)) for i in range(len(header))]
    lines = []
    for number, line in enumerate(cells):
        if len(line) == len(header):
            lines.append("  ".join(cell.rjust(widths[i]) for i, cell in enumerate(line)).rstrip())
        else:
            lines.append(line[0].rjust(widths[0]) + "  " + "  ".join(line[1:]))
        if number == 0 and wide:
            lines.append("  ".join("-" * w for w in widths))
        if number == 1 and skipped:
            lines.append("⋮".rjust(widths[0]) + f"  {skipped} more")
    return lines


#: The curves a profile can draw: (key, label, marker).
CURVES = {
    "peak_bytes": ("profile peak", "◆"),
    "over_base": ("peak above base", "◆"),
    "kv_bytes": ("KV cache", "◇"),
}


def _value(row: ProfileRow, key: str) -> int | None:
    if key == "over_base":
        if row.peak_bytes is None or row.base_bytes is None:
            return None
        return max(row.peak_bytes - row.base_bytes, 0)
    return getattr(row, key)


def profile_series(rows: Sequence[ProfileRow], keys: Sequence[str] = ("peak_bytes", "kv_bytes"),
                   styles: dict[str, Style | str] | None = None) -> list[Series]:
    """One connected curve per key over the rows that were measured (failed rows have no points)."""
    out = []
    for key in keys:
        label, marker = CURVES[key]
        points = sorted((float(r.context_tokens), float(v)) for r in rows if not r.error
                        and (v := _value(r, key)) is not None)
        if points:
            out.append(Series(label, points, marker, (styles or {}).get(key, ""), connect=True,
                              extra={"key": key}))
    return out

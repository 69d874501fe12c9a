"""Making text visible: whitespace markers, control characters, invisible characters, byte pieces.

Text from the model or the user is only ever appended to ``rich.text.Text``
objects with a style; it is never parsed as markup.
"""

from __future__ import annotations

import re

from rich.cells import cell_len, get_character_cell_size
from rich.style import Style

from backends.core.sanitize import visible_text

WHITESPACE_MARKS = str.maketrans({" ": "·", "\t": "→", "\n": "↵", "\u00a0": "⍽"})
_WHITESPACE_RUN = re.compile("([ \t\n\u00a0]+)")
# Zero-width, joiner, bidi-control and other invisible formatting characters.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u2028-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb]"
)
_BYTE_MARKERS = re.compile("(?:<0x[0-9A-F]{2}>)+")


def _code_point(match: re.Match) -> str:
    return f"<U+{ord(match.group()):04X}>"


def printable(text: str) -> str:
    """``text`` with control characters, escape sequences and invisible
    formatting characters (zero-width, bidi overrides) replaced by visible
    stand-ins. Tab and newline are kept (they are drawn as markers)."""
    text = visible_text(text)
    if not text.isascii():
        text = _INVISIBLE.sub(_code_point, text)
    return text


def mark_whitespace(text: str) -> str:
    """Space as ``·``, tab as ``→``, newline as ``↵``, no-break space as ``⍽``."""
    return text.translate(WHITESPACE_MARKS)


def whitespace_runs(text: str) -> list[tuple[str, bool]]:
    """Split printable text into (shown text, is whitespace marker) runs."""
    out = []
    for k, part in enumerate(_WHITESPACE_RUN.split(text)):
        if part:
            out.append((part.translate(WHITESPACE_MARKS), k % 2 == 1))
    return out


def text_width(text: str) -> int:
    """Cells ``text`` takes once its whitespace is drawn as one-cell markers."""
    if text.isascii():
        return len(text)
    return cell_len(text.translate(WHITESPACE_MARKS))


def merge_byte_markers(text: str) -> str:
    """Join ``<0xNN>`` byte pieces back into characters (text mode shows the string)."""
    if "<0x" not in text:
        return text

    def decode(match: re.Match) -> str:
        raw = bytes(int(match.group()[k + 3:k + 5], 16) for k in range(0, len(match.group()), 6))
        return raw.decode("utf-8", errors="replace")

    return _BYTE_MARKERS.sub(decode, text)


PIECE_CACHE: dict[str, tuple[tuple[tuple[str, bool], ...], int, bool]] = {}
_EMPTY_PIECE = "∅"


def piece_info(piece: str) -> tuple[tuple[tuple[str, bool], ...], int, bool]:
    """(runs, width in cells, ends a line) for one token piece; cached per piece."""
    info = PIECE_CACHE.get(piece)
    if info is None:
        shown = printable(piece)
        if not shown:
            runs: tuple[tuple[str, bool], ...] = ((_EMPTY_PIECE, True),)
        else:
            if text_width(shown) == 0:  # only combining marks: show their code points
                shown = "".join(f"<U+{ord(c):04X}>" for c in shown)
            runs = tuple(whitespace_runs(shown))
        width = sum(cell_len(s) for s, _ in runs)
        info = (runs, width, "\n" in piece)
        if len(PIECE_CACHE) > 300_000:
            PIECE_CACHE.clear()
        PIECE_CACHE[piece] = info
    return info


#: A piece of text and its style, as the inspector draws it.
Run = tuple[str, Style]


def slice_cells(text: str, start: int, end: int) -> str:
    """The characters of ``text`` within cells [start, end) (whitespace counted as one cell)."""
    if text.isascii():
        return text[max(start, 0):end]
    out = []
    x = 0
    for ch in text:
        cw = 1 if ch in " \t\n\u00a0" else get_character_cell_size(ch)
        if x >= start and x + cw <= end:
            out.append(ch)
        x += cw
        if x >= end:
            break
    return "".join(out)


def cut_runs(runs: list[Run], start: int, end: int) -> list[Run]:
    """The part of styled runs within cells [start, end)."""
    out: list[Run] = []
    x = 0
    for s, style in runs:
        w = text_width(s)
        if x + w > start and x < end:
            part = s if (x >= start and x + w <= end) else slice_cells(s, start - x, end - x)
            if part:
                out.append((part, style))
        x += w
        if x >= end:
            break
    return out

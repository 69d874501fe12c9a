"""Turn a PromptView into Rich Text lines: the inspector's drawing, without an app.

Three modes show the same prompt:

* ``pieces``: every token as its readable piece (on alternating chips) followed
  by its ID; special tokens highlighted; a role label where each message starts.
* ``text``: the rendered prompt string, special tokens highlighted, role labels.
* ``ids``: the plain ID list in a grid, with the position of the first ID of each row.

Whitespace is made visible everywhere (``visible.py``). A :class:`Layout`
wraps one view in one mode at one width. Building it costs one cheap pass over
the tokens (piece widths are cached per distinct piece); each line's ``Text``
is built only when asked for, so a widget draws only what is on screen.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import compress
from typing import Iterator

from rich.cells import cell_len, get_character_cell_size
from rich.style import Style
from rich.text import Text

from backends.core.sequences import common_prefix
from backends.prompt.check import PromptCheck
from backends.prompt.view import TOOLS_SPAN, PromptView, Span

from .palette import DEFAULT_PALETTE, Palette
from .prompt_header import dropped_entry, header_lines
from .visible import (
    PIECE_CACHE,
    WHITESPACE_MARKS,
    Run,
    cut_runs,
    merge_byte_markers,
    piece_info,
    printable,
    slice_cells,
    text_width,
    whitespace_runs,
)

MODES: tuple[str, ...] = ("pieces", "text", "ids")



def segments(view: PromptView) -> list[tuple[Span | None, int, int]]:
    """(span or None, start, end) covering every token in order; None marks tokens no span claims."""
    n = len(view.ids)
    out: list[tuple[Span | None, int, int]] = []
    pos = 0
    for span in sorted(view.spans, key=lambda s: (s.start, s.end)):
        start, end = max(span.start, pos), min(span.end, n)
        if start >= end:
            continue
        if start > pos:
            out.append((None, pos, start))
        out.append((span, start, end))
        pos = end
    if pos < n:
        out.append((None, pos, n))
    return out


def span_label(span: Span) -> str:
    role = printable(span.role).replace("\n", " ")
    if span.index == TOOLS_SPAN:
        return f"tool definitions ({span.end - span.start:,} tokens)"
    if span.index < 0:
        return "generation prompt" if role in ("generation", "") else f"{role} (framing)"
    return f"#{span.index} {role}"


_DROPPED, _LABEL, _TOKENS, _TEXT = range(4)
_PLAIN = Style.null()


def _same_label(a: Span | None, b: Span | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.index, a.role, a.start) == (b.index, b.role, b.start)


class Layout:
    """One view in one mode wrapped to ``width`` cells; lines are drawn on demand.

    Pass the ``previous`` layout (same mode and width) when the view changed a
    little, as it does on each keystroke: every line before the first changed
    token is reused, so the work is proportional to what changed.
    """

    def __init__(self, view: PromptView, mode: str = "pieces", width: int = 80, *,
                 previous: "Layout | None" = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        self.view = view
        #: A background per token (how expected each was, from a prompt score), or None.
        self.shades: list | None = None
        self.mode = mode
        self.width = max(int(width), 1)
        self._lines: list[tuple] = []
        self._first: list[int] = []  # first token of each stored line (non-decreasing)
        self._logical: list[tuple[tuple[tuple[str, bool], ...], tuple[int, ...], bool]] = []
        self._segments: list[tuple[Span | None, int, int]] = []
        #: per segment: (first line, end line, first logical line, end logical line)
        self._ranges: list[tuple[int, int, int, int]] = []
        self._grid_rows = 0
        self._chips: tuple[Palette, dict] | None = None
        self.reused_lines = 0
        for entry in view.dropped:
            self._add((_DROPPED, entry), 0)
        if mode == "ids":
            self._layout_ids()
            return
        todo = segments(view)
        if previous is not None and previous._can_help(self):
            todo = self._reuse(previous, todo)
        for span, start, end in todo:
            self._layout_segment(span, start, end)

    def __len__(self) -> int:
        return len(self._lines) + self._grid_rows

    def _add(self, entry: tuple, first: int) -> None:
        self._lines.append(entry)
        self._first.append(first)

    # -- building ----------------------------------------------------------------
    def _layout_segment(self, span: Span | None, start: int, end: int, *, resume: int | None = None,
                        line_lo: int | None = None) -> None:
        """Lay out one message's tokens. ``resume``: its label and lines before that
        token are in place already, from line ``line_lo`` on."""
        logical_lo = len(self._logical)
        if resume is None:
            line_lo = len(self._lines)
            if span is not None:
                self._add((_LABEL, span), start)
            resume = start
        assert line_lo is not None
        if self.mode == "pieces":
            self._layout_pieces(resume, end)
        else:
            self._layout_text(start, end)
        self._segments.append((span, start, end))
        self._ranges.append((line_lo, len(self._lines), logical_lo, len(self._logical)))

    def _can_help(self, new: "Layout") -> bool:
        old = self.view
        return (self.mode == new.mode and self.width == new.width and old.family == new.view.family
                and old.dropped == new.view.dropped)

    def _reuse(self, previous: "Layout", todo: list[tuple[Span | None, int, int]]) -> list[tuple[Span | None, int, int]]:
        """Copy the previous layout's lines that cannot have changed; return the segments still to do."""
        same = common_prefix(previous.view.ids, self.view.ids)
        old_segments = previous._segments
        k = 0
        while (k < len(todo) and k < len(old_segments) and todo[k] == old_segments[k]
               and todo[k][2] <= same):
            k += 1
        base = len(self._lines)
        if k:
            line_hi, logical_hi = previous._ranges[k - 1][1], previous._ranges[k - 1][3]
        else:
            line_hi, logical_hi = base, 0
        self._lines = previous._lines[:line_hi]
        self._first = previous._first[:line_hi]
        self._logical = previous._logical[:logical_hi]
        self._segments = old_segments[:k]
        self._ranges = previous._ranges[:k]
        self.reused_lines = line_hi - base
        if self.mode != "pieces" or k >= len(todo) or k >= len(old_segments):
            return todo[k:]
        span, start, end = todo[k]
        old_span, old_start, old_end = old_segments[k]
        if start != old_start or not _same_label(span, old_span) or start >= same:
            return todo[k:]
        # Inside the changed message: keep its label and every line that ends before
        # the change (and before the message's old end, where a line may have been cut short).
        limit = min(same, old_end)
        lo, hi, _, _ = previous._ranges[k]
        take, resume = lo, start
        for j in range(lo, hi):
            entry = previous._lines[j]
            if entry[0] == _LABEL:
                take = j + 1
            elif entry[0] == _TOKENS and entry[2] < limit:
                take, resume = j + 1, entry[2]
            else:
                break
        if take == lo:  # nothing of this message could be kept
            return todo[k:]
        line_lo = len(self._lines)
        self._lines.extend(previous._lines[lo:take])
        self._first.extend(previous._first[lo:take])
        self.reused_lines += take - lo
        self._layout_segment(span, start, end, resume=resume, line_lo=line_lo)
        return todo[k + 1:]

    def _layout_pieces(self, start: int, end: int) -> None:
        pieces, ids, width = self.view.pieces, self.view.ids, self.width
        lines, first = self._lines, self._first
        cache = PIECE_CACHE
        x = 0
        line_start = start
        for i in range(start, end):
            piece = pieces[i]
            info = cache.get(piece) or piece_info(piece)
            w = info[1] + len(str(ids[i]))
            if x and x + w > width:
                lines.append((_TOKENS, line_start, i, 0))
                first.append(line_start)
                line_start, x = i, 0
            if w > width:  # wider than a whole line: it gets rows of its own
                for skip in range(0, w, width):
                    lines.append((_TOKENS, i, i + 1, skip))
                    first.append(i)
                line_start, x = i + 1, 0
                continue
            x += w + 1
            if info[2]:
                lines.append((_TOKENS, line_start, i + 1, 0))
                first.append(line_start)
                line_start, x = i + 1, 0
        if line_start < end:
            lines.append((_TOKENS, line_start, end, 0))
            first.append(line_start)

    def _text_runs(self, start: int, end: int) -> Iterator[tuple[str, bool]]:
        pieces = self.view.pieces
        pos = start
        for i in compress(range(start, end), self.view.special[start:end]):
            if i > pos:
                yield printable(merge_byte_markers("".join(pieces[pos:i]))), False
            yield printable(pieces[i]), True
            pos = i + 1
        if pos < end:
            yield printable(merge_byte_markers("".join(pieces[pos:end]))), False

    def _layout_text(self, start: int, end: int) -> None:
        current: list[tuple[str, bool]] = []
        for run, special in self._text_runs(start, end):
            parts = run.split("\n")
            last = len(parts) - 1
            for k, part in enumerate(parts):
                if k < last:
                    current.append((part + "\n", special))
                    self._add_logical(current, start)
                    current = []
                elif part:
                    current.append((part, special))
        if current:
            self._add_logical(current, start)

    def _add_logical(self, runs: list[tuple[str, bool]], first: int) -> None:
        widths = tuple(text_width(s) for s, _ in runs)
        ascii_only = all(s.isascii() for s, _ in runs)
        index = len(self._logical)
        self._logical.append((tuple(runs), widths, ascii_only))
        total, width = sum(widths), self.width
        if total <= width:
            self._add((_TEXT, index, 0, total), first)
        elif ascii_only:
            for cut in range(0, total, width):
                self._add((_TEXT, index, cut, min(cut + width, total)), first)
        else:
            x = line_start = 0
            for s, _ in runs:
                for ch in s.translate(WHITESPACE_MARKS):
                    cw = get_character_cell_size(ch)
                    if x - line_start + cw > width and x > line_start:
                        self._add((_TEXT, index, line_start, x), first)
                        line_start = x
                    x += cw
            if x > line_start:
                self._add((_TEXT, index, line_start, x), first)

    def _layout_ids(self) -> None:
        n = len(self.view.ids)
        self._gutter = len(str(max(n - 1, 0)))
        self._column = max((len(str(i)) for i in (max(self.view.ids), min(self.view.ids))), default=1) if n else 1
        self._per_row = max(1, (self.width - self._gutter - 1) // (self._column + 1))
        self._grid_rows = -(-n // self._per_row)

    # -- queries -------------------------------------------------------------------
    def line_of_token(self, position: int) -> int | None:
        """The line where token ``position`` is drawn (text mode: where its message starts)."""
        if not 0 <= position < len(self.view.ids):
            return None
        if self.mode == "ids":
            return len(self._lines) + position // self._per_row
        index = bisect_right(self._first, position) - 1
        while index > 0 and self._lines[index][0] == _TOKENS and self._lines[index][1] > position:
            index -= 1
        return max(index, 0)

    def first_token(self, line: int) -> int | None:
        """The first token drawn on ``line`` (or before it), for keeping a place across modes."""
        if not 0 <= line < len(self):
            return None
        if line >= len(self._lines):
            return (line - len(self._lines)) * self._per_row
        return self._first[line]

    def lines(self, palette: Palette = DEFAULT_PALETTE, mark: int | None = None) -> list[Text]:
        return [self.line(i, palette, mark) for i in range(len(self))]

    # -- drawing -------------------------------------------------------------------
    def line(self, index: int, palette: Palette = DEFAULT_PALETTE, mark: int | None = None) -> Text:
        """Line ``index`` as Text; ``mark`` is a token position to highlight (a mismatch)."""
        text = Text(no_wrap=True, overflow="crop", end="")
        for s, style in self.runs(index, palette, mark):
            text.append(s, style)
        return text

    def runs(self, index: int, palette: Palette = DEFAULT_PALETTE, mark: int | None = None) -> list[Run]:
        """Line ``index`` as (text, style) runs, at most ``width`` cells in all."""
        if index >= len(self._lines):
            return self._grid_runs(index - len(self._lines), palette, mark)
        entry = self._lines[index]
        kind = entry[0]
        if kind == _TOKENS:
            return self._token_runs(entry[1], entry[2], entry[3], palette, mark)
        if kind == _TEXT:
            return self._text_runs_of_line(entry[1], entry[2], entry[3], palette)
        if kind == _LABEL:
            label = f"── {span_label(entry[1])} "
            return cut_runs([(label + "─" * max(0, self.width - cell_len(label)), palette.role)], 0, self.width)
        text = dropped_entry(entry[1], palette)
        return cut_runs([(text.plain, palette.dropped)], 0, self.width)

    def _chip_styles(self, palette: Palette) -> dict[tuple[int, bool], tuple[Style, Style]]:
        """(piece style, whitespace-marker style) by (position parity, special), per palette."""
        cached = self._chips
        if cached is None or cached[0] is not palette:
            table = {}
            for parity, chip in ((0, palette.piece), (1, palette.piece_alt)):
                for special in (False, True):
                    base = chip + palette.special if special else chip
                    table[parity, special] = (base, base + palette.whitespace)
            cached = self._chips = (palette, table)
        return cached[1]

    def _token_runs(self, start: int, end: int, skip: int, palette: Palette, mark: int | None) -> list[Run]:
        view = self.view
        pieces, ids, special = view.pieces, view.ids, view.special
        chips = self._chip_styles(palette)
        id_style = palette.token_id
        shades = self.shades
        runs: list[Run] = []
        append = runs.append
        for t in range(start, end):
            if t == mark:
                base = palette.mismatch
                blank = base + palette.whitespace
            elif shades is not None and shades[t] is not None:  # how expected the token was
                base = shades[t] + palette.special if special[t] else shades[t]
                blank = base + palette.whitespace
            else:
                base, blank = chips[t & 1, special[t]]
            for s, is_space in piece_info(pieces[t])[0]:
                append((s, blank if is_space else base))
            append((str(ids[t]), palette.mismatch if t == mark else id_style))
            if t < end - 1:
                append((" ", _PLAIN))
        if skip or end - start == 1:  # a lone token may be wider than the line
            return cut_runs(runs, skip, skip + self.width)
        return runs

    def _text_runs_of_line(self, index: int, start: int, end: int, palette: Palette) -> list[Run]:
        runs, widths, _ = self._logical[index]
        out: list[Run] = []
        x = 0
        for (s, special), w in zip(runs, widths):
            if x >= end:
                break
            if x + w > start:
                part = slice_cells(s, start - x, end - x) if (start > x or x + w > end) else s
                style = palette.special if special else _PLAIN
                blank = style + palette.whitespace
                for piece, is_space in whitespace_runs(part):
                    out.append((piece, blank if is_space else style))
            x += w
        return out

    def _grid_runs(self, row: int, palette: Palette, mark: int | None) -> list[Run]:
        view = self.view
        start = row * self._per_row
        end = min(start + self._per_row, len(view.ids))
        runs: list[Run] = [(f"{start:>{self._gutter}} ", palette.gutter)]
        column = self._column
        for t in range(start, end):
            style = palette.mismatch if t == mark else (palette.special if view.special[t] else _PLAIN)
            runs.append((f"{view.ids[t]:>{column}}", style))
            if t < end - 1:
                runs.append((" ", _PLAIN))
        if self._gutter + 1 + (end - start) * (column + 1) - 1 > self.width:
            return cut_runs(runs, 0, self.width)
        return runs


def render_lines(view: PromptView, mode: str = "pieces", width: int = 80,
                 palette: Palette = DEFAULT_PALETTE, *, error: str | None = None,
                 check: PromptCheck | None = None) -> list[Text]:
    """Every line the inspector would show for ``view``: the header, then the body."""
    mark = check.mismatch if check is not None else None
    return header_lines(view, mode, width, palette, error=error, check=check) + Layout(view, mode, width).lines(palette, mark)

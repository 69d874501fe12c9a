"""Where the tool definitions are in a rendered prompt: spans of their own (``TOOLS_SPAN``).

A chat template writes the tools wherever its format has them (inside the system turn, before
the first user message ...); comparing the prompt rendered with and without them finds that
text without knowing the template: what the render with tools adds is the tools' part. Some
templates add it in more than one place (Llama 3.1: a line in the system turn and the
definitions in the first user message), so each added stretch is a span of its own and the
messages between them keep theirs.
"""

from __future__ import annotations

from difflib import SequenceMatcher

from backends.core.sequences import common_prefix
from backends.prompt.view import TOOLS_SPAN, Span

#: Text both renders share inside the changed stretch counts as the conversation's only when it is
#: at least this long; shorter matches are chance agreement inside the definitions (a quote, a brace).
_MIN_SHARED = 12


def added_stretches(text: str, plain: str) -> list[tuple[int, int]]:
    """Character ranges of ``text`` (rendered with tools) that ``plain`` (without them) lacks."""
    start = common_prefix(text, plain)
    tail = common_prefix(text[start:][::-1], plain[start:][::-1])
    end, plain_end = len(text) - tail, len(plain) - tail
    if end <= start:
        return []
    if plain_end <= start:  # the usual case: the tools are one insertion
        return [(start, end)]
    matcher = SequenceMatcher(None, plain[start:plain_end], text[start:end], autojunk=False)
    stretches, cursor = [], start
    for block in matcher.get_matching_blocks():
        if block.size < _MIN_SHARED:  # chance agreement, or the closing empty block
            continue
        at = start + block.b
        if at > cursor:
            stretches.append((cursor, at))
        cursor = max(cursor, at + block.size)
    if cursor < end:
        stretches.append((cursor, end))
    return _slid_right(text, stretches)


def _slid_right(text: str, stretches: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each stretch moved as far right as gives the same text: an insertion that begins with what
    follows it ("\\n\\nAnswer ...\\n\\n" + "\\n\\nWeather") is told as the text after the shared
    part, leaving a turn's own opening ("<|end_header_id|>\\n\\n") with its turn."""
    out = []
    for k, (start, end) in enumerate(stretches):
        limit = stretches[k + 1][0] if k + 1 < len(stretches) else len(text)
        while end < limit and text[start] == text[end]:
            start, end = start + 1, end + 1
        out.append((start, end))
    return out


def tools_span(spans: list[Span], text: str, plain: str, token_ends: list[int]) -> list[Span]:
    """``spans`` of ``text`` with the tokens of each stretch that ``plain`` lacks cut out into a
    ``TOOLS_SPAN`` span (a token partly inside a stretch goes with it)."""
    last = 0
    for start, end in added_stretches(text, plain):
        # Tokens wholly before the stretch (past the previous one, which a token both share went to) ...
        first = max(last, sum(1 for e in token_ends if e <= start))
        last = sum(1 for e in token_ends if e < end)  # ... and those that end inside it
        if last < len(token_ends):
            last += 1  # the token the stretch ends in
        spans = split_spans(spans, first, last)
    return spans


def split_spans(spans: list[Span], start: int, end: int, index: int = TOOLS_SPAN, role: str = "tools") -> list[Span]:
    """``spans`` with tokens ``[start, end)`` given to a span of their own; the spans it cuts keep
    their parts before and after it."""
    if end <= start:
        return spans
    out: list[Span] = []
    placed = False
    for span in spans:
        if span.end <= start or span.start >= end:
            if span.start >= end and not placed:
                out.append(Span(index, role, start, end))
                placed = True
            out.append(span)
            continue
        if span.start < start:
            out.append(Span(span.index, span.role, span.start, start))
        if not placed:
            out.append(Span(index, role, start, end))
            placed = True
        if span.end > end:
            out.append(Span(span.index, span.role, end, span.end))
    if not placed:
        out.append(Span(index, role, start, end))
    return out

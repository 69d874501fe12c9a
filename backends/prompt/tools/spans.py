"""Where the tool definitions are in a rendered prompt: a span of their own (``TOOLS_SPAN``).

A chat template writes the tools wherever its format has them (inside the system turn, before
the first user message ...); comparing the prompt rendered with and without them finds that
text without knowing the template: what differs between the two renders is the tools' part.
"""

from __future__ import annotations

from backends.core.sequences import common_prefix
from backends.prompt.view import TOOLS_SPAN, Span


def tools_span(spans: list[Span], text: str, plain: str, token_ends: list[int]) -> list[Span]:
    """``spans`` of ``text`` (rendered with tools) with the tokens that differ from ``plain``
    (the same render without them) cut out into one ``TOOLS_SPAN`` span."""
    start = common_prefix(text, plain)
    tail = common_prefix(text[start:][::-1], plain[start:][::-1])
    end = len(text) - tail
    if end <= start:
        return spans
    first = sum(1 for e in token_ends if e <= start)  # tokens wholly before the tools' text
    last = sum(1 for e in token_ends if e <= end)  # ... and those that end within it
    if last < len(token_ends) and (token_ends[last - 1] if last else 0) < end:
        last += 1  # a token that starts inside the tools' text and runs past it
    return split_spans(spans, first, last)


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

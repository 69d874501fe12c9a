"""A reply drawn token by token: coloured by how sure the model was, with a cursor; and the
inspector's output view of the token under the cursor.

The scale is calm and readable in 256 colours: a likely token (90% or more)
is left plain, so the eye goes to the doubtful ones; below that the
background shifts through the theme's muted success, warning and error
colours. Text is always shown as text: it goes into ``Content`` objects and
``rich.text.Text`` with styles, never parsed as markup.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.content import Content

from backends.core.events import TokenInfo
from backends.core.sanitize import visible_text

from .palette import DEFAULT_PALETTE, Palette
from .sparkline import bar_text
from .visible import mark_whitespace, printable

#: (lowest probability, background, legend label), likeliest first.
BUCKETS: tuple[tuple[float, str, str], ...] = (
    (0.9, "", "≥90%"),
    (0.5, "$success-muted", "50–90%"),
    (0.2, "$warning-muted", "20–50%"),
    (0.0, "$error-muted", "<20%"),
)


def probability(info: TokenInfo | None) -> float | None:
    return None if info is None else math.exp(info.logprob)


def bucket_style(p: float | None) -> str:
    """The background for a token of probability ``p`` (plain when unknown or likely)."""
    if p is None:
        return ""
    for lowest, style, _ in BUCKETS:
        if p >= lowest:
            return f"on {style}" if style else ""
    return ""


def reply_content(tokens: list, *, colour: bool, cursor: int | None, trim_end: bool = False,
                  styles: list[str] | None = None) -> Content:
    """A reply's tokens as styled text; the cursor's token is shown reversed (its whitespace visible).
    ``styles`` (one per token) colour by something else than the model's probability (a divergence).

    Neighbouring tokens of the same style make one span: most tokens are likely
    and plain, so a long reply is a few hundred spans, not thousands. With
    ``trim_end``, one line break at the very end is left out (the next chunk
    starts on a new line anyway)."""
    runs: list[tuple[str, str]] = []  # (text, style)
    for index, token in enumerate(tokens):
        text = visible_text(token.text)
        style = "" if not colour else styles[index] if styles is not None else bucket_style(probability(token.info))
        if index == cursor:
            if not text.strip():  # whitespace: show it, and keep its line breaks
                text = mark_whitespace(text) + "\n" * text.count("\n")
            style = f"{style} reverse bold".strip()
            if not text:
                text = "∅"
        if runs and runs[-1][1] == style:  # the cursor's style is its own, so it stays a run apart
            runs[-1] = (runs[-1][0] + text, style)
        else:
            runs.append((text, style))
    if trim_end and runs and runs[-1][0].endswith("\n"):
        runs[-1] = (runs[-1][0][:-1], runs[-1][1])
    return Content.assemble(*[(text, style) if style else text for text, style in runs if text]) \
        if runs else Content("")


def chunk_starts(tokens: list, size: int) -> list[int]:
    """Where each chunk of about ``size`` tokens starts; a chunk ends only after a line break,
    so chunks stacked one under another read as the whole reply."""
    starts = [0]
    for index, token in enumerate(tokens[:-1]):
        if index + 1 - starts[-1] >= size and token.text.endswith("\n"):
            starts.append(index + 1)
    return starts


def legend() -> Content:
    """``token probability: ≥90% 50–90% 20–50% <20% · v walks the tokens``"""
    parts: list = [("token probability: ", "dim")]
    for _, style, label in BUCKETS:
        parts += [(f" {label} ", f"on {style}" if style else ""), " "]
    parts.append(("· v walks, t hides", "dim"))
    return Content.assemble(*parts)


def is_chosen(alternative, token) -> bool:
    """Whether ``alternative`` is the token that was generated (by ID, or by text when the engine gave none)."""
    return alternative.id == token.id if alternative.id is not None else alternative.piece == token.text


def token_line(tokens: list, index: int) -> Content:
    """The token under the cursor on one line, for when the inspector is out of sight:
    ``4/8 ·of id 282 98.9% │ 2 ·in 0.7% 3 ·is 0.1% 4 , 0.1%  F7: all``"""
    token = tokens[index]
    parts: list = [(f"{index + 1}/{len(tokens)} ", "dim"), (mark_whitespace(printable(token.text)) or "∅", "bold")]
    if token.id is not None:
        parts.append((f" id {token.id}", "dim"))
    info = token.info
    if info is None:
        parts.append(("  no probabilities for this token", "dim"))
        return Content.assemble(*parts)
    parts.append(f" {math.exp(info.logprob):.1%} │")
    others = [(n, a) for n, a in enumerate(info.top, start=1) if not is_chosen(a, token)]
    for number, alternative in others[:3]:
        parts += [(f" {number} ", "dim"), mark_whitespace(printable(alternative.piece)) or "∅",
                  f" {math.exp(alternative.logprob):.1%}"]
    parts.append(("  F7: all", "dim"))
    return Content.assemble(*parts)


def word_starts(tokens: list) -> list[int]:
    """Token positions where a word begins (after whitespace, or at a token that starts with it)."""
    starts = []
    previous = " "
    for index, token in enumerate(tokens):
        text = token.text
        if text and (text[0].isspace() or previous[-1:].isspace()) and text.strip():
            starts.append(index)
        elif index == 0:
            starts.append(index)
        previous = text or previous
    return starts


def output_lines(tokens: list, index: int, width: int, palette: Palette = DEFAULT_PALETTE, *,
                 branch: str = "") -> list[Text]:
    """The inspector's output view: the token under the cursor and the model's alternatives to it."""
    token = tokens[index]
    info = token.info
    shown = mark_whitespace(printable(token.text)) or "∅"
    head = Text(f"token {index + 1:,} of {len(tokens):,}", palette.muted, no_wrap=True, overflow="crop")
    if branch:
        head.append(f" · {branch}", palette.muted)
    lines = [head]
    line = Text(no_wrap=True, overflow="crop")
    line.append(shown, palette.piece)
    line.append(f"  id {token.id}" if token.id is not None else "  (no ID from this engine)", palette.token_id)
    lines.append(line)
    if info is None:
        lines.append(Text("no probabilities for this token (the engine gave none, or top_logprobs is 0)",
                          palette.muted, no_wrap=True, overflow="crop"))
        return lines
    figures = [f"p {math.exp(info.logprob):.1%} (logprob {info.logprob:.3f})"]
    if info.rank is not None:
        figures.append(f"rank {info.rank}")
    if info.entropy is not None:
        figures.append(f"entropy {info.entropy:.2f} nats")
    if info.sampled_logprob is not None and abs(info.sampled_logprob - info.logprob) > 1e-6:
        figures.append(f"as sampled {math.exp(info.sampled_logprob):.1%}")
    lines.append(Text(" · ".join(figures), no_wrap=True, overflow="crop"))
    if not info.top:
        return lines
    lines.append(Text("alternatives (1-9 takes one and goes on from there):", palette.muted, no_wrap=True,
                      overflow="crop"))
    label_width = min(18, max(len(mark_whitespace(printable(a.piece))) for a in info.top) + 1)
    bar_width = max(6, width - label_width - 14)
    for number, alternative in enumerate(info.top, start=1):
        p = math.exp(alternative.logprob)
        chosen = is_chosen(alternative, token)
        row = Text(f"{number} ", palette.role if chosen else palette.muted, no_wrap=True, overflow="crop")
        label = (mark_whitespace(printable(alternative.piece)) or "∅")[:label_width]
        row.append(label.ljust(label_width), palette.special if chosen else "")
        row.append_text(bar_text(p, bar_width, palette.bar_ok if chosen else palette.bar_warn, palette.bar_empty))
        row.append(f" {p:6.1%}")
        lines.append(row)
    return lines

"""The inspector's fixed lines above the tokens: context bar, prompt check, truncation, warnings."""

from __future__ import annotations

import math

from rich.text import Text

from backends.generation.score import PromptScore
from backends.prompt.by_message import FRAMING, aligned_counts
from backends.prompt.check import PromptCheck
from backends.prompt.view import Dropped, PromptView

from .palette import DEFAULT_PALETTE, Palette
from .sparkline import bar_text, level_style
from .visible import mark_whitespace, printable


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def context_line(view: PromptView, mode: str, width: int = 80, palette: Palette = DEFAULT_PALETTE) -> Text:
    """A bar of prompt tokens against the context window, e.g. ``━━━── 1,234 / 8,192``."""
    used = len(view.ids)
    text = Text(no_wrap=True, overflow="crop")
    if view.max_context:
        fraction = used / view.max_context
        bar_width = min(24, max(6, width // 4))
        style = level_style(fraction, palette.bar_ok, palette.bar_warn, palette.bar_full)
        text.append_text(bar_text(fraction, bar_width, style, palette.bar_empty))
        text.append(f" {used:,} / {view.max_context:,}", style if fraction > 1 else "")
        text.append(f" ({fraction:.0%})", palette.muted)
    else:
        text.append(f"{used:,} tokens", "")
        text.append(" (context size unknown)", palette.muted)
    if view.dropped:
        text.append(f"  ✂ {view.dropped_tokens:,} cut", palette.dropped)
    text.append(f"  {printable(view.family)} · {mode}", palette.muted)
    return text


def dropped_summary(view: PromptView, palette: Palette = DEFAULT_PALETTE) -> Text | None:
    """``✂ 2 messages dropped (812 tokens) by qwen truncation``, or None when nothing was cut."""
    if not view.dropped:
        return None
    whole = sum(1 for d in view.dropped if not d.partial)
    cut = len(view.dropped) - whole
    parts = []
    if whole:
        parts.append(_plural(whole, "message") + " dropped")
    if cut:
        parts.append(_plural(cut, "message") + " cut short")
    budget = all(d.by == "budget" for d in view.dropped)
    by = "the prompt budget" if budget else f"{printable(view.family)} truncation"
    line = f"✂ {', '.join(parts)} ({_plural(view.dropped_tokens, 'token')}) by {by}"
    return Text(line, palette.dropped, no_wrap=True, overflow="crop")


def dropped_entry(entry: Dropped, palette: Palette = DEFAULT_PALETTE) -> Text:
    what = "start cut" if entry.partial else "dropped"
    line = f"✂ #{entry.index} {printable(entry.role)} · {_plural(entry.tokens, 'token')} {what}"
    if entry.reason:
        line += f" · {printable(entry.reason)}"
    return Text(line.replace("\n", " "), palette.dropped, no_wrap=True, overflow="crop")


def verdict_line(check: PromptCheck, palette: Palette = DEFAULT_PALETTE, prefix: str = "") -> Text:
    """What the check could establish, and no more: ``✓ captured == preview (N tokens)``,
    ``✗ differs at position P: preview X vs captured Y``, a token count, or that nothing was verifiable."""
    text = Text(prefix, palette.muted, no_wrap=True, overflow="crop")
    view = check.view
    if check.level == "none":
        text.append("? not verifiable: the engine reports neither the prompt's IDs nor their number", palette.warning)
        return text
    if check.level == "count":
        if check.verified:
            text.append(f"✓ count verified: the engine read {_plural(check.count, 'prompt token')}, as previewed"
                        " (the IDs themselves are not reported)", palette.ok)
        else:
            text.append(f"✗ the engine read {_plural(check.count, 'prompt token')}; the preview has "
                        f"{len(view.ids):,}", palette.error)
        return text
    position = check.mismatch
    if position is None:
        text.append(f"✓ captured == preview ({_plural(len(view.ids), 'token')})", palette.ok)
        return text
    captured = check.ids
    mine = str(view.ids[position]) if position < len(view.ids) else "(end)"
    theirs = str(captured[position]) if position < len(captured) else "(end)"
    text.append(f"✗ differs at position {position:,}: preview {mine} vs captured {theirs}", palette.error)
    if len(captured) != len(view.ids):
        text.append(f" · preview {len(view.ids):,} tokens, captured {len(captured):,}", palette.muted)
    return text


def cache_line(check: PromptCheck, palette: Palette = DEFAULT_PALETTE) -> Text | None:
    """``1,813 tokens: 1,756 from the cache, 57 read now`` when some of the prompt came from a kept
    cache; why each turn is read whole when the engine could keep none; else None."""
    if check.cached and check.read_now is not None:
        total = check.cached + check.read_now
        return Text(f"↺ {total:,} tokens: {check.cached:,} from the cache, {check.read_now:,} read now",
                    palette.muted, no_wrap=True, overflow="crop")
    if check.cache_note:
        return Text(f"each turn is read whole: {printable(check.cache_note)}", palette.muted, no_wrap=True,
                    overflow="crop")
    return None


def warning_lines(view: PromptView, palette: Palette = DEFAULT_PALETTE) -> list[Text]:
    return [Text("⚠ " + printable(w).replace("\n", " "), palette.warning, no_wrap=True, overflow="crop")
            for w in view.warnings]


def error_line(message: str, palette: Palette = DEFAULT_PALETTE) -> Text:
    return Text("✗ preview failed: " + printable(message).replace("\n", " ↵ "), palette.error,
                no_wrap=True, overflow="crop")


def header_lines(view: PromptView | None, mode: str, width: int = 80, palette: Palette = DEFAULT_PALETTE, *,
                 error: str | None = None, check: PromptCheck | None = None,
                 verdict_prefix: str = "") -> list[Text]:
    """The inspector's fixed lines: context bar, prompt check, truncation, mode note, warnings, error."""
    lines: list[Text] = []
    if view is None:
        lines.append(Text("no prompt yet", palette.muted))
    else:
        lines.append(context_line(view, mode, width, palette))
    if check is not None:
        lines.append(verdict_line(check, palette, verdict_prefix))
        cached = cache_line(check, palette)
        if cached is not None:
            lines.append(cached)
    if view is not None:
        summary = dropped_summary(view, palette)
        if summary is not None:
            lines.append(summary)
        if view.mode == "incremental":
            lines.append(Text("incremental: only the new turn is sent; earlier turns come from the model's cache",
                              palette.muted, no_wrap=True, overflow="crop"))
        lines.extend(warning_lines(view, palette))
    if error:
        lines.append(error_line(error, palette))
    return lines


def compared_lines(labels: list[str], views: list[PromptView], shown: int, width: int = 80,
                   palette: Palette = DEFAULT_PALETTE, checks: list | None = None) -> list[Text]:
    """Compare mode: each model's prompt for the conversation, tokens per message side by side, each
    prompt's check once its turn has run, and whose prompt the tokens below are (``shown``)."""
    name_width = 12
    column = max(7, min(14, (width - name_width - 2) // max(1, len(views))))
    lines = [Text(f"prompts of the {len(views)} compared models, tokens per message "
                  f"(below: model {shown + 1}'s; n shows the next)", palette.muted, no_wrap=True, overflow="crop")]
    head = Text("".ljust(name_width), no_wrap=True, overflow="crop")
    for n, label in enumerate(labels, start=1):
        head.append(f"{n} {printable(label)}"[: column - 1].rjust(column), palette.role if n - 1 == shown else "")
    lines.append(head)
    for row in aligned_counts(views):
        name = row.role if row.index == FRAMING else f"{row.index} {row.role}"
        line = Text(printable(name)[: name_width - 1].ljust(name_width), palette.muted, no_wrap=True, overflow="crop")
        for tokens in row.tokens:
            line.append(("—" if tokens is None else f"{tokens:,}").rjust(column),
                        palette.dropped if tokens is None else "")
        lines.append(line)
    total = Text("all".ljust(name_width), palette.muted, no_wrap=True, overflow="crop")
    for view in views:
        total.append(f"{len(view.ids):,}".rjust(column), "bold")
    lines.append(total)
    if checks and any(c is not None for c in checks):
        now = all(c is None or c.view is v for c, v in zip(checks, views))
        marks = Text(("checked" if now else "last turn").ljust(name_width), palette.muted, no_wrap=True,
                     overflow="crop")
        for check in checks:
            verified = None if check is None else check.verified
            mark = "…" if check is None else "?" if verified is None else "✓" if verified else "✗"
            marks.append(mark.rjust(column), palette.ok if verified else palette.error if verified is False
                         else palette.muted)
        lines.append(marks)
    return lines


# -- the body --------------------------------------------------------------------


def shades(score: PromptScore, palette: Palette) -> list:
    """A background per prompt token from its score: none for the likely ones (90% and more)."""
    out = []
    for value in score.logprobs:
        p = math.exp(value) if value is not None else 1.0
        out.append(None if p >= 0.9 else palette.prob_mid if p >= 0.5 else palette.prob_low if p >= 0.2
                   else palette.prob_lowest)
    return out


def score_line(view: PromptView, score: PromptScore, palette: Palette) -> Text:
    """``read by the model: mean logprob -4.32 · least expected #12 'LM' 0.0% …``"""
    line = Text("read by the model: ", palette.muted, no_wrap=True, overflow="crop")
    mean = score.mean
    line.append(f"mean logprob {mean:.2f}" if mean is not None else "nothing to score")
    for position, value in score.least_expected(3):
        line.append(f" · #{position} ", palette.muted)
        line.append(mark_whitespace(printable(view.pieces[position])) or "∅", palette.prob_lowest)
        line.append(f" {math.exp(value):.1%}")
    return line

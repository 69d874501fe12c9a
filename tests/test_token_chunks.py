"""A long reply drawn in chunks reads exactly as the whole reply: chunks end at line breaks,
and stacked one under another they give back every character."""

from __future__ import annotations

from backends.core.events import TokenEvent, TokenInfo
from tui.widgets.token_view import chunk_starts, reply_content


def reply_tokens(demo_dir) -> list[TokenEvent]:
    """A real tokenisation of a long text with paragraphs (the default model's tokenizer)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_dir)
    text = "\n\n".join(f"Paragraph {n}: the keeper climbed the stairs, lit the lamp and watched the sea."
                       for n in range(60))
    ids = tokenizer.encode(text, add_special_tokens=False)
    return [TokenEvent(i, tokenizer.decode([i]), 0.0, TokenInfo(-0.1 * (n % 7))) for n, i in enumerate(ids)]


def test_chunks_end_at_line_breaks_and_give_back_the_reply(demo_dir):
    tokens = reply_tokens(demo_dir)
    starts = chunk_starts(tokens, 200)
    assert len(starts) > 3 and starts[0] == 0
    assert all(tokens[s - 1].text.endswith("\n") for s in starts[1:])
    bounds = [*starts, len(tokens)]
    chunks = [reply_content(tokens[a:b], colour=True, cursor=None, trim_end=b < len(tokens)).plain
              for a, b in zip(bounds, bounds[1:])]
    assert "\n".join(chunks) == "".join(t.text for t in tokens)


def test_the_cursor_shows_a_line_break_and_keeps_it(demo_dir):
    tokens = reply_tokens(demo_dir)
    newline = next(n for n, t in enumerate(tokens) if "\n" in t.text and not t.text.strip())
    content = reply_content(tokens, colour=False, cursor=newline)
    assert "↵" in content.plain and content.plain.count("\n") == "".join(t.text for t in tokens).count("\n")

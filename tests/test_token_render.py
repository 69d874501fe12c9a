"""Drawing PromptViews as Rich Text, with real views from the default model's tokenizer."""

from __future__ import annotations

from dataclasses import replace

import pytest
from rich.cells import cell_len
from rich.text import Text

from backends.prompt.check import PromptCheck
from backends.prompt.view import Dropped, PromptView
from tui.widgets.palette import DEFAULT_PALETTE
from tui.widgets.prompt_header import context_line, header_lines, verdict_line
from tui.widgets.sparkline import bar, sparkline
from tui.widgets.token_layout import MODES, Layout, render_lines
from tui.widgets.visible import mark_whitespace, merge_byte_markers, printable

HOSTILE = "Hi there\n\tok [bold]x[/bold] \x1b]52;c;SGVsbG8=\x07 你好 \u202eabc"


@pytest.fixture(scope="module")
def messages() -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": HOSTILE}]


@pytest.fixture(scope="module")
def view(demo_handle, messages) -> PromptView:
    return demo_handle.render(messages)


def plain(lines: list[Text]) -> list[str]:
    return [line.plain for line in lines]


def style_of(line: Text, needle: str):
    """The style(s) applied over the first occurrence of ``needle`` in ``line``."""
    at = line.plain.index(needle)
    styles = [span.style for span in line.spans if span.start <= at < span.end]
    assert styles, f"no style on {needle!r}"
    return styles[-1]


def body(view: PromptView, mode: str, width: int = 80) -> list[Text]:
    return Layout(view, mode, width).lines(DEFAULT_PALETTE)


# -- pieces mode ---------------------------------------------------------------------


def test_pieces_show_each_token_with_its_id(view):
    lines = plain(body(view, "pieces"))
    flat = " ".join(lines)
    for token_id, piece in zip(view.ids, view.pieces):
        shown = mark_whitespace(printable(piece)).replace("\n", "")
        assert f"{shown}{token_id}" in flat
    assert "<|im_start|>1 system9690 ↵198" in lines


def test_special_tokens_are_highlighted(view):
    line = next(t for t in body(view, "pieces") if t.plain.startswith("<|im_start|>"))
    special = style_of(line, "<|im_start|>")
    assert special.color == DEFAULT_PALETTE.special.color and special.bold
    ordinary = style_of(line, "system")
    assert ordinary.color != DEFAULT_PALETTE.special.color


def test_whitespace_is_visible_and_newlines_break_lines(view):
    lines = plain(body(view, "pieces"))
    assert "Hi26843 ·there665 ↵198" in lines  # space as ·, newline as ↵ then a line break
    assert any(line.startswith("→197 ok2231") for line in lines)  # tab as →
    for line in lines:
        assert "\n" not in line and "\t" not in line
        if "↵" in line and not line.startswith("──"):
            assert line.endswith(("↵198", "↵" + str(view.ids[-1])))


def test_role_label_at_each_message_start(view):
    layout = Layout(view, "pieces", 80)
    lines = plain(layout.lines())
    labels = [line for line in lines if line.startswith("── ")]
    assert [label.split(" ─")[0] for label in labels] == ["── #0 system", "── #1 user", "── generation prompt"]
    for span in view.spans:
        at = layout.line_of_token(span.start)
        assert lines[at - 1].startswith("── ")  # the label sits right above the span's first token
        assert lines[at].startswith(printable(view.pieces[span.start]))


# -- text and ids modes ---------------------------------------------------------------


def test_text_mode_is_the_prompt_string(view):
    lines = [line for line in plain(body(view, "text", 200)) if not line.startswith("── ")]
    assert "".join(lines) == mark_whitespace(printable(view.text))
    assert lines[0] == "<|im_start|>system↵"
    special = style_of(body(view, "text", 200)[1], "<|im_start|>")
    assert special.color == DEFAULT_PALETTE.special.color


def test_ids_mode_lists_every_id_in_order(view):
    layout = Layout(view, "ids", 40)
    rows = plain(layout.lines())
    ids: list[int] = []
    for row in rows:
        start, *values = row.split()
        assert int(start) == len(ids)  # the gutter is the position of the row's first ID
        ids.extend(int(v) for v in values)
    assert ids == view.ids
    assert layout.line_of_token(len(view.ids) - 1) == len(rows) - 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", [6, 13, 37, 120])
def test_lines_fit_the_width(view, mode, width):
    for line in body(view, mode, width):
        assert cell_len(line.plain) <= width


def test_a_token_wider_than_the_line_is_split_over_rows(demo_handle):
    long_view = demo_handle.render([{"role": "user", "content": "x" + " " * 40 + "y"}])
    widest = max(len(p) for p in long_view.pieces)
    assert widest > 12
    rows = plain(body(long_view, "pieces", 12))
    joined = "".join(rows)
    assert "·" * widest in joined


@pytest.mark.parametrize("mode", ["pieces", "text"])
def test_reusing_the_previous_layout_draws_the_same_lines(demo_handle, mode):
    history = [{"role": "user", "content": "first question, rather long " * 12},
               {"role": "assistant", "content": "an answer\nover lines\n" * 6}]
    typed = "Hello there, how are you\ndoing today? Fine, 你好. " * 3
    conversations = [history + [{"role": "user", "content": typed[:n]}] for n in (1, 2, 3, 30, 31, 80, 140, 60, 4)]
    conversations.append([{"role": "user", "content": "edited " + history[0]["content"]}] + history[1:])
    conversations.append(history[:1])
    conversations.append(history + [{"role": "user", "content": typed}])
    views = [demo_handle.render(messages) for messages in conversations]
    for width in (23, 80):
        previous = None
        reused = []
        for view in views:
            layout = Layout(view, mode, width, previous=previous)
            fresh = Layout(view, mode, width)
            assert len(layout) == len(fresh)
            assert [layout.runs(i) for i in range(len(layout))] == [fresh.runs(i) for i in range(len(fresh))]
            assert [layout.first_token(i) for i in range(len(layout))] == [fresh.first_token(i) for i in range(len(fresh))]
            reused.append(layout.reused_lines)
            previous = layout
        assert reused[0] == 0 and min(reused[1:9]) > 0  # typing reuses the conversation so far
        assert reused[9] < min(reused[1:9])  # an edit in the first message: little is left to reuse


# -- safety ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_markup_and_escapes_are_shown_never_acted_on(view, mode):
    lines = render_lines(view, mode, 100)
    text = "\n".join(plain(lines))
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    if mode == "text":
        assert "[bold]x[/bold]" in text
        assert "␛]52;c;SGVsbG8=␇" in text
        assert "<U+202E>abc" in text
        assert "你好" in text
    if mode == "pieces":
        assert "␛212" in text and "␇195" in text


def test_printable_and_byte_markers():
    assert printable("a\x1b[31mb\x07\u200b") == "a␛[31mb␇<U+200B>"
    assert printable("tab\tand\nnewline") == "tab\tand\nnewline"
    assert merge_byte_markers("<0xE4><0xBD><0xA0>!") == "你!"
    assert merge_byte_markers("<0xFF>") == "\ufffd"


# -- header: context bar, truncation, verdict, warnings ---------------------------------------


def test_context_bar(view):
    line = context_line(view, "pieces", 80).plain
    assert f"{len(view.ids)} / 8,192" in line and f"{view.family} · pieces" in line
    unknown = context_line(replace(view, max_context=None), "text", 80).plain
    assert "context size unknown" in unknown


def test_dropped_messages_are_counted_and_greyed(view):
    cut = replace(view, dropped=[Dropped(0, "user", 500), Dropped(1, "assistant", 312, reason="over budget"),
                                 Dropped(2, "user", 40, partial=True)])
    lines = render_lines(cut, "pieces", 100)
    texts = plain(lines)
    assert f"✂ 2 messages dropped, 1 message cut short (852 tokens) by {view.family} truncation" in texts
    entries = [line for line in lines if line.plain.startswith("✂ #")]
    assert [e.plain for e in entries] == [
        "✂ #0 user · 500 tokens dropped",
        "✂ #1 assistant · 312 tokens dropped · over budget",
        "✂ #2 user · 40 tokens start cut",
    ]
    for entry in entries:
        assert style_of(entry, "✂") == DEFAULT_PALETTE.dropped
    # the greyed entries come first in the body, before the first kept message
    first_label = next(i for i, t in enumerate(texts) if t.startswith("── "))
    assert texts.index(entries[-1].plain) < first_label


def test_verdict_match_and_mismatch(view):
    same = PromptCheck.of(view, list(view.ids))
    assert verdict_line(same).plain == f"✓ captured == preview ({len(view.ids)} tokens)"
    changed = list(view.ids)
    changed[7] = 12345
    differs = PromptCheck.of(view, changed)
    assert verdict_line(differs).plain == f"✗ differs at position 7: preview {view.ids[7]} vs captured 12345"
    shorter = PromptCheck.of(view, view.ids[:-2])
    text = verdict_line(shorter).plain
    assert text.startswith(f"✗ differs at position {len(view.ids) - 2}: preview {view.ids[-2]} vs captured (end)")
    assert (same.verified, differs.verified, shorter.verified) == (True, False, False)


def test_a_check_never_claims_more_than_it_could_see(view):
    """A count is a weaker check than the IDs, and no figure at all is no check."""
    counted = PromptCheck.of(view, None, prompt_tokens=len(view.ids))
    assert counted.level == "count" and counted.verified is True and counted.mismatch is None
    assert verdict_line(counted).plain.startswith(f"✓ count verified: the engine read {len(view.ids)} prompt tokens")
    short = PromptCheck.of(view, None, prompt_tokens=len(view.ids) - 1)
    assert short.verified is False and verdict_line(short).plain.startswith("✗ the engine read")
    nothing = PromptCheck.of(view, None)
    assert nothing.level == "none" and nothing.verified is None
    assert "✓" not in verdict_line(nothing).plain and "not verifiable" in verdict_line(nothing).plain
    assert PromptCheck.of(view, list(view.ids), level="count").level == "none"  # a cap, never a promotion


def test_mismatch_token_is_marked(view):
    changed = list(view.ids)
    changed[3] = 1
    lines = render_lines(view, "pieces", 100, check=PromptCheck.of(view, changed))
    marked = [(line, span) for line in lines for span in line.spans if span.style == DEFAULT_PALETTE.mismatch]
    assert {line.plain[span.start:span.end] for line, span in marked} == {view.pieces[3], str(view.ids[3])}


def test_warnings_and_errors_in_the_header(view):
    warned = replace(view, warnings=["doubled BOS: the prompt starts with two BOS tokens"])
    lines = header_lines(warned, "pieces", 80, error="template said [red]no[/red]\x1b")
    texts = plain(lines)
    assert "⚠ doubled BOS: the prompt starts with two BOS tokens" in texts
    assert "✗ preview failed: template said [red]no[/red]␛" in texts
    assert lines[texts.index("⚠ doubled BOS: the prompt starts with two BOS tokens")].style == DEFAULT_PALETTE.warning


def test_a_view_without_spans_still_shows_every_token(view):
    bare = replace(view, spans=[], mode="incremental")
    lines = render_lines(bare, "pieces", 100)
    texts = plain(lines)
    assert not any(t.startswith("── ") for t in texts)
    assert any(t.startswith("incremental: only the new turn is sent") for t in texts)
    flat = " ".join(texts)
    for token_id, piece in zip(view.ids, view.pieces):
        assert f"{mark_whitespace(printable(piece))}{token_id}" in flat
    text_lines = plain(body(bare, "text", 100))
    assert "".join(text_lines) == mark_whitespace(printable(view.text))


def test_empty_view_draws_nothing_but_the_header():
    empty = PromptView(family="t", text="", ids=[], pieces=[], special=[])
    for mode in MODES:
        assert len(Layout(empty, mode, 40)) == 0
    assert "0 tokens" in render_lines(empty)[0].plain


# -- text graphics -------------------------------------------------------------------------


def test_sparkline_and_bar():
    assert sparkline([1, 2, 3], 3) == "▁▅█"
    assert sparkline([5, 5], 4) == "▁▁"
    assert sparkline([1, None, 3], 3) == "▁ █"
    assert sparkline(list(range(10)), 4) == "▁▃▆█"  # the newest values
    assert bar(0.5, 10) == ("━" * 5, "━" * 5)
    assert bar(0.05, 10) == ("╸", "━" * 9)
    assert bar(2.0, 4) == ("━" * 4, "")

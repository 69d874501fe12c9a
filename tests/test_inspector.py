"""The Inspector widget in a real Textual app, fed real PromptViews from the default model."""

from __future__ import annotations

from dataclasses import replace

import pytest
from textual.app import App, ComposeResult

from backends.prompt.check import PromptCheck
from backends.prompt.view import Dropped, PromptView
from tui.widgets.inspector import Inspector

SIZE = (100, 30)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Host(App):
    def compose(self) -> ComposeResult:
        yield Inspector(id="inspector")


@pytest.fixture(scope="module")
def view(demo_handle) -> PromptView:
    return demo_handle.render([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there\n\tok [bold]x[/bold] \x1b]52;c;SGVsbG8=\x07"},
    ])


@pytest.fixture(scope="module")
def big_view(demo_handle) -> PromptView:
    """About 32k tokens: a long conversation."""
    messages = []
    for i in range(170):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": f"message {i}: " + "the quick brown fox jumps. " * 32})
    messages.append({"role": "user", "content": "and the very last question?"})
    big = demo_handle.render(messages)
    assert 30_000 <= len(big) <= 40_000
    return big


def segments_of(inspector: Inspector):
    for y in range(inspector.size.height):
        yield from inspector.render_line(y)


def screen_text(inspector: Inspector) -> str:
    return "\n".join(inspector.rendered_lines())


async def test_preview_shows_pieces_ids_roles_and_context(view):
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        inspector = app.query_one(Inspector)
        inspector.show_preview(view)
        await pilot.pause()
        lines = inspector.rendered_lines()
        assert f"{len(view.ids)} / 8,192" in lines[0]
        text = screen_text(inspector)
        assert "── #0 system" in text and "── #1 user" in text and "── generation prompt" in text
        assert "<|im_start|>1 system9690 ↵198" in text
        assert "Hi26843 ·there665 ↵198" in text
        assert "→197 ok2231" in text
        special = [s for s in segments_of(inspector) if s.text == "<|im_start|>"]
        assert special and all(s.style.bold and s.style.color == inspector.palette.special.color for s in special)


async def test_markup_and_escape_sequences_are_shown_literally(demo_handle):
    view = demo_handle.render([{"role": "user", "content": "[bold]x[/bold] \x1b]52;c;SGVsbG8=\x07 [link=x]y"}])
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        inspector = app.query_one(Inspector)
        inspector.show_preview(view)
        await pilot.pause()
        assert "␛212" in screen_text(inspector) and "␇195" in screen_text(inspector)
        inspector.mode = "text"
        await pilot.pause()
        text = screen_text(inspector)
        assert "[bold]x[/bold]·␛]52;c;SGVsbG8=␇·[link=x]y" in text
        for segment in segments_of(inspector):
            assert "\x1b" not in segment.text and "\x07" not in segment.text
            assert segment.style is None or not segment.style.link


async def test_m_cycles_the_mode_when_focused(view):
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        inspector = app.query_one(Inspector)
        inspector.show_preview(view)
        inspector.focus()
        await pilot.pause()
        assert inspector.mode == "pieces"
        await pilot.press("m")
        assert inspector.mode == "text"
        assert "<|im_start|>system↵" in screen_text(inspector)
        assert "pieces" not in inspector.rendered_lines()[0] and "text" in inspector.rendered_lines()[0]
        await pilot.press("m")
        assert inspector.mode == "ids"
        grid = [line.split() for line in inspector.rendered_lines()[1:] if line.strip()]
        assert [int(v) for row in grid for v in row[1:]] == view.ids
        await pilot.press("m")
        assert inspector.mode == "pieces"
        assert inspector.cycle_mode() == "text"
        with pytest.raises(ValueError):
            inspector.mode = "bogus"


async def test_captured_equal_shows_a_check_mark(view):
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        inspector = app.query_one(Inspector)
        inspector.show_preview(view)
        assert inspector.verdict is None
        inspector.show_captured(PromptCheck.of(view, list(view.ids)))
        await pilot.pause()
        assert inspector.verdict is True
        assert f"✓ captured == preview ({len(view.ids)} tokens)" in inspector.rendered_lines()[1]
        # the next preview (a new view, as after each edit) keeps the last turn's verdict, labelled as such
        inspector.show_preview(replace(view))
        await pilot.pause()
        assert inspector.rendered_lines()[1].startswith("last turn: ✓ captured == preview")


async def test_captured_mismatch_names_the_position(view):
    captured = list(view.ids)
    captured[9] = 4242
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        inspector = app.query_one(Inspector)
        inspector.show_captured(PromptCheck.of(view, captured))
        await pilot.pause()
        assert inspector.verdict is False
        assert f"✗ differs at position 9: preview {view.ids[9]} vs captured 4242" in inspector.rendered_lines()[1]
        marked = [s.text for s in segments_of(inspector) if s.style and s.style.bgcolor
                  and s.style.bgcolor == inspector.palette.mismatch.bgcolor]
        assert str(view.ids[9]) in marked


async def test_dropped_messages_are_greyed_out_with_a_count(view):
    cut = replace(view, dropped=[Dropped(0, "user", 700), Dropped(1, "assistant", 112)])
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        inspector = app.query_one(Inspector)
        inspector.show_preview(cut)
        inspector.scroll_home(animate=False, immediate=True)
        await pilot.pause()
        lines = inspector.rendered_lines()
        assert f"✂ 2 messages dropped (812 tokens) by {view.family} truncation" in lines
        assert "✂ #0 user · 700 tokens dropped" in "\n".join(lines)
        greyed = [s for s in segments_of(inspector) if s.text.startswith("✂ #")]
        assert greyed and all(s.style.italic and s.style.color == inspector.palette.dropped.color for s in greyed)


async def test_error_keeps_the_last_preview(view):
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        inspector = app.query_one(Inspector)
        inspector.show_preview(view)
        inspector.show_preview(None, error="the chat template rejects [b]this[/b]")
        await pilot.pause()
        text = screen_text(inspector)
        assert "✗ preview failed: the chat template rejects [b]this[/b]" in text
        assert "── #1 user" in text and inspector.view is view
        inspector.show_preview(None)
        await pilot.pause()
        assert inspector.rendered_lines()[0].startswith("no prompt yet")
        assert inspector.line_count == 0


async def test_32k_tokens_scroll_to_the_end_and_back(big_view):
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        inspector = app.query_one(Inspector)
        inspector.show_preview(big_view)
        inspector.focus()
        await pilot.pause()
        assert inspector.line_count > 1000
        await pilot.press("home")
        await pilot.pause()
        top = screen_text(inspector)
        assert "── #0 user" in top and "question" not in top
        assert inspector.scroll_y == 0
        await pilot.press("pagedown")
        body_height = inspector.size.height - 2  # two fixed header lines: context bar, warning
        assert inspector.scroll_y == body_height
        await pilot.press("down", "down", "up")
        assert inspector.scroll_y == body_height + 1
        await pilot.press("end")
        await pilot.pause()
        bottom = inspector.rendered_lines()
        assert bottom[0].startswith("━") and f"{len(big_view):,} / 8,192" in bottom[0]
        assert "── generation prompt" in bottom[-2]
        assert bottom[-1].startswith("<|im_start|>1 ass520 istant9531 ↵198")
        assert any("question" in line for line in bottom)


async def test_new_preview_follows_the_end_unless_scrolled_away(big_view, demo_handle):
    longer = demo_handle.render([{"role": "user", "content": "x " * 3000}])
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        inspector = app.query_one(Inspector)
        inspector.show_preview(longer)
        await pilot.pause()
        assert inspector.scroll_y == inspector.max_scroll_y > 0
        inspector.show_preview(big_view)
        await pilot.pause()
        assert inspector.scroll_y == inspector.max_scroll_y  # still following the end
        inspector.scroll_home(animate=False, immediate=True)
        inspector.show_preview(longer)
        await pilot.pause()
        assert inspector.scroll_y == 0  # the user's place is kept


async def test_resize_rewraps_to_the_new_width(big_view):
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        inspector = app.query_one(Inspector)
        inspector.show_preview(big_view)
        await pilot.pause()
        wide = inspector.line_count
        await pilot.resize_terminal(50, 20)
        await pilot.pause()
        assert inspector.line_count > wide
        assert all(len(line) <= inspector.size.width for line in inspector.rendered_lines())

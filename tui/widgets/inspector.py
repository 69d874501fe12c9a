"""The prompt inspector: exactly what the model receives, token by token.

The app shows the preview of the *next* prompt while the user types
(:meth:`Inspector.show_preview`) and, once a turn has run, the IDs the
model's first forward call really received (:meth:`Inspector.show_captured`).

Drawing goes through the Line API: a :class:`~tui.widgets.token_layout.Layout`
is one cheap pass over the tokens (on a keystroke, only over what changed),
and only the lines on screen are turned into segments, so a 32k-token prompt
scrolls and re-renders without lag. A few
fixed lines at the top (context bar, verdict, truncation, warnings) stay put
while the tokens scroll beneath them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from backends.generation.score import PromptScore
from backends.prompt.check import PromptCheck
from backends.prompt.view import PromptView

from .palette import Palette
from .prompt_header import compared_lines, header_lines, score_line, shades
from .sparkline import theme_style
from .token_layout import MODES, Layout


def _component(name: str) -> str:
    return "inspector--" + name.replace("_", "-")


class Inspector(ScrollView, can_focus=True):
    """Token pieces with IDs, the rendered text, or the ID list of one prompt."""

    BINDINGS = [
        Binding("m", "cycle_mode", "Inspector mode", id="inspector.cycle-mode"),
        Binding("s", "score", "Score the prompt", id="inspector.score",
                tooltip="how the model reads this prompt: each token's probability, the least expected named"),
        Binding("n", "next_compared", "Next model's prompt", id="inspector.next-compared", show=False,
                tooltip="compare mode: show the next compared model's prompt below the table"),
    ]

    @dataclass
    class ScoreRequested(Message):
        """Score the prompt shown (one forward pass of the model over it)."""

        view: PromptView

    COMPONENT_CLASSES = {_component(name) for name in Palette.names()} | {"inspector--header"}

    DEFAULT_CSS = """
    Inspector {
        height: 1fr;
        overflow-x: hidden;
        overflow-y: scroll;
        scrollbar-size-vertical: 1;
        background: $surface;
    }
    Inspector:focus {
        background-tint: $foreground 3%;
    }
    Inspector > .inspector--header { background: $panel; }
    Inspector > .inspector--piece { background: $surface-lighten-1; }
    Inspector > .inspector--piece-alt { background: $surface-lighten-2; }
    Inspector > .inspector--token-id { color: $text-muted; }
    Inspector > .inspector--special { color: $accent; text-style: bold; }
    Inspector > .inspector--whitespace { color: $text-disabled; }
    Inspector > .inspector--role { color: $secondary; text-style: bold; }
    Inspector > .inspector--dropped { color: $text-disabled; text-style: italic; }
    Inspector > .inspector--warning { color: $warning; }
    Inspector > .inspector--error { color: $error; text-style: bold; }
    Inspector > .inspector--ok { color: $success; text-style: bold; }
    Inspector > .inspector--mismatch { color: $text; background: $error; text-style: bold; }
    Inspector > .inspector--gutter { color: $text-muted; }
    Inspector > .inspector--muted { color: $text-muted; }
    Inspector > .inspector--bar-ok { color: $success; }
    Inspector > .inspector--bar-warn { color: $warning; }
    Inspector > .inspector--bar-full { color: $error; }
    Inspector > .inspector--bar-empty { color: $surface-lighten-2; }
    Inspector > .inspector--prob-mid { background: $success-muted; }
    Inspector > .inspector--prob-low { background: $warning-muted; }
    Inspector > .inspector--prob-lowest { background: $error-muted; }
    """

    #: "pieces" (token pieces with IDs), "text" (the prompt string) or "ids" (the ID list).
    mode: reactive[str] = reactive("pieces")

    def __init__(self, *, mode: str = "pieces", name: str | None = None, id: str | None = None,
                 classes: str | None = None, disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._view: PromptView | None = None
        self._error: str | None = None
        self._check: PromptCheck | None = None
        #: The output view (the token under the chat's cursor): draws its lines at a width; None: the prompt.
        self._output: Callable[[int], list[Text]] | None = None
        self._score: tuple[PromptView, PromptScore] | None = None  # a prompt score, of that view
        #: Compare mode: (labels, views, checks, shown): every model's prompt, tokens per message in the header.
        self._compared: tuple[list, list, list, int] | None = None
        self._layout: Layout | None = None
        self._header: list[Text] = []
        self._shown_header: list[Text] = []
        self._mark: int | None = None
        self._palette: Palette | None = None
        self._follow_end = True
        self._generation = 0
        self._strips: LRUCache[tuple, Strip] = LRUCache(512)
        self._header_h = 0
        self._base: Style | None = None
        self.set_reactive(Inspector.mode, self.validate_mode(mode))

    # -- public API ------------------------------------------------------------------
    @property
    def view(self) -> PromptView | None:
        """The prompt shown now (the latest preview, or the captured turn)."""
        return self._view

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def check(self) -> PromptCheck | None:
        """The last turn's prompt check (what the engine received against the preview), once one ran."""
        return self._check

    @property
    def verdict(self) -> bool | None:
        """True/False once a turn's prompt was checked, None before (or when nothing was verifiable)."""
        return None if self._check is None else self._check.verified

    @property
    def line_count(self) -> int:
        """Lines of tokens (the scrolling part), for the current width and mode."""
        layout = self._ensure_layout()
        return len(layout) if layout is not None else 0

    def show_preview(self, view: PromptView | None, error: str | None = None) -> None:
        """Show the prompt the next turn will send; ``error`` says why it can't be built.

        With an error and no view the last good preview stays on screen under the error.
        """
        self._error = error
        if view is None and error is None:
            self._view = None
            self._check = None
        elif view is not None:
            self._view = view
        self._mark = None
        self._refresh_content()

    def show_captured(self, check: PromptCheck) -> None:
        """Show a turn that has run, checked against what the engine really received."""
        self._error = None
        self._view = check.view
        self._check = check
        self._mark = check.mismatch
        self._refresh_content()
        if self._mark is not None:
            self.scroll_to_token(self._mark)

    def clear(self) -> None:
        self.show_preview(None)

    def show_compared(self, labels: list[str], views: list[PromptView], checks: list | None = None) -> None:
        """Compare mode: each model's prompt, tokens per message side by side above the tokens of one
        of them (the one shown before, else the reference's; ``n`` goes to the next)."""
        before = self._compared if self._compared is not None and len(self._compared[1]) == len(views) else None
        shown = before[3] if before is not None else 0
        if checks is None:  # a preview: the last turn's checks stay on the table, said to be the last turn's
            checks = before[2] if before is not None else [None] * len(views)
        self._compared = (labels, views, list(checks), shown)
        self._show_compared_view()

    def hide_compared(self) -> None:
        self._compared = None

    def action_next_compared(self) -> None:
        if self._compared is None:
            self.notify("n shows the next compared model's prompt: /compare 1 2 turns compare mode on",
                        severity="warning", markup=False)
            return
        labels, views, checks, shown = self._compared
        self._compared = (labels, views, checks, (shown + 1) % len(views))
        self._show_compared_view()

    def _show_compared_view(self) -> None:
        _, views, checks, shown = self._compared
        self._error = None
        self._view, self._check = views[shown], checks[shown]
        self._mark = self._check.mismatch if self._check is not None else None
        self._refresh_content()

    # -- the output side and how the model read the prompt --------------------------------------

    def show_output(self, draw: Callable[[int], list[Text]]) -> None:
        """Show the output view: ``draw(width)`` gives its lines (the token under the cursor)."""
        self._output = draw
        self._refresh_content()
        self.scroll_to(y=0, animate=False, immediate=True)

    def hide_output(self) -> None:
        if self._output is not None:
            self._output = None
            self._refresh_content()

    @property
    def showing_output(self) -> bool:
        return self._output is not None

    def show_score(self, view: PromptView, score: PromptScore) -> None:
        """Colour the pieces of ``view`` by how expected each token was, with a summary line."""
        self._score = (view, score)
        self._view = view
        self._refresh_content()

    @property
    def score(self) -> PromptScore | None:
        return self._score[1] if self._score is not None and self._score[0] is self._view else None

    def action_score(self) -> None:
        if self._view is not None and self._view.ids:
            self.post_message(self.ScoreRequested(self._view))

    def cycle_mode(self) -> str:
        """Switch to the next mode (pieces → text → ids → pieces); returns the new mode."""
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        return self.mode

    def scroll_to_token(self, position: int) -> None:
        """Scroll so that token ``position`` is on screen (about a third of the way down)."""
        layout = self._ensure_layout()
        if layout is None:
            return
        line = layout.line_of_token(position)
        if line is None:
            return
        self._follow_end = False
        target = max(0, line - self._body_height() // 3)
        self.scroll_to(y=target, animate=False, immediate=True)
        self._follow_end = self.scroll_y >= self.max_scroll_y

    def rendered_lines(self) -> list[str]:
        """The text of every line on screen now, as drawn, without trailing blanks (for tests)."""
        return [self.render_line(y).text.rstrip() for y in range(self.size.height)]

    # -- reactive --------------------------------------------------------------------
    def validate_mode(self, mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"unknown inspector mode {mode!r}; expected one of {', '.join(MODES)}")
        return mode

    def watch_mode(self, old: str, new: str) -> None:
        top_token = None
        if self._layout is not None and not self._follow_end:
            top_token = self._layout.first_token(int(self.scroll_y))
        self._refresh_content()
        if top_token is not None and self._layout is not None:
            line = self._layout.line_of_token(top_token)
            if line is not None:
                self.scroll_to(y=line, animate=False, immediate=True)

    def action_cycle_mode(self) -> None:
        self.cycle_mode()

    # -- scrolling ---------------------------------------------------------------------
    def _body_height(self) -> int:
        return max(1, self.scrollable_content_region.height - self._header_height())

    def action_scroll_home(self) -> None:
        self.scroll_to(y=0, animate=False)

    def action_scroll_end(self) -> None:
        self.scroll_to(y=self.max_scroll_y, animate=False)

    def action_page_down(self) -> None:
        self.scroll_to(y=self.scroll_y + self._body_height(), animate=False)

    def action_page_up(self) -> None:
        self.scroll_to(y=self.scroll_y - self._body_height(), animate=False)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._follow_end = new_value >= self.max_scroll_y

    # -- layout ------------------------------------------------------------------------
    def _content_width(self) -> int:
        return self.scrollable_content_region.width

    def _header_height(self) -> int:
        return self._header_h

    def _fit_header(self) -> None:
        """Keep the fixed lines to half the height; say how many did not fit."""
        height = self.scrollable_content_region.height
        room = max(1, height // 2) if height else len(self._header)
        shown = self._header[:room]
        if len(self._header) > room >= 2:
            hidden = len(self._header) - room + 1
            shown = self._header[:room - 1] + [
                Text(f"… {hidden} more lines (give the inspector more height)", self.palette.muted, no_wrap=True)]
        self._shown_header = shown
        self._header_h = len(shown)

    @property
    def _base_style(self) -> Style:
        if self._base is None:
            self._base = self.rich_style
        return self._base

    def _ensure_layout(self) -> Layout | None:
        width = self._content_width()
        if self._view is None or width <= 0 or self._output is not None:
            self._layout = None
            return None
        layout = self._layout
        if layout is None or layout.view is not self._view or layout.mode != self.mode or layout.width != width:
            self._layout = Layout(self._view, self.mode, width, previous=layout)
            self._generation += 1
        return self._layout

    def _refresh_content(self) -> None:
        follow = self._follow_end
        width = self._content_width()
        prefix = ""
        if self._check is not None and self._check.view is not self._view:
            prefix = "last turn: "
        if self._output is not None:
            self._header = self._output(max(width, 1))
            self._shown_header, self._header_h = self._header, len(self._header)
        else:
            self._header = header_lines(self._view, self.mode, max(width, 1), self.palette, error=self._error,
                                        check=self._check, verdict_prefix=prefix)
            if self.score is not None:
                self._header.insert(1, score_line(self._view, self.score, self.palette))
            if self._compared is not None:
                labels, views, checks, shown = self._compared
                self._header[:0] = compared_lines(labels, views, shown, max(width, 1), self.palette, checks)
            self._fit_header()
        layout = self._ensure_layout()
        if layout is not None:
            layout.shades = shades(self.score, self.palette) if self.score is not None else None
        self._generation += 1
        self._strips.clear()
        lines = len(layout) if layout is not None else 0
        self.virtual_size = Size(max(width, 1), self._header_height() + lines)
        if follow:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        self.refresh()

    def on_resize(self) -> None:
        self._refresh_content()

    @property
    def palette(self) -> Palette:
        if self._palette is None:
            try:
                styles = {name: theme_style(self, _component(name)) for name in Palette.names()}
            except Exception:  # not mounted yet: no stylesheet to read
                return Palette()
            self._palette = Palette(**styles)
        return self._palette

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._palette = None
        self._base = None
        self._strips.clear()
        if self.is_mounted:
            # Component styles settle after this call; read them once they have.
            self.call_after_refresh(self._restyle)

    def _restyle(self) -> None:
        self._palette = None
        self._refresh_content()

    # -- drawing -----------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self._base_style
        header_height = self._header_h
        if y < header_height:
            key = ("header", y, width, self._generation)
            strip = self._strips.get(key)
            if strip is None:
                header_style = self.get_component_rich_style("inspector--header", partial=True)
                strip = self._strip(self._shown_header[y], width, base + header_style)
                self._strips[key] = strip
            return strip
        layout = self._layout if self._layout is not None else self._ensure_layout()
        index = int(self.scroll_y) + y - header_height
        if layout is None or not 0 <= index < len(layout):
            return Strip.blank(width, base)
        key = ("body", index, width, self._generation)
        strip = self._strips.get(key)
        if strip is None:
            segments = [Segment(text, style) for text, style in layout.runs(index, self.palette, self._mark)]
            strip = Strip(segments).crop_extend(0, width, base).apply_style(base)
            self._strips[key] = strip
        return strip

    def _strip(self, text: Text, width: int, style: Style) -> Strip:
        console = self.app.console
        segments = text.render(console)
        if text.style:  # Text.render leaves the Text's own style to the caller
            segments = Segment.apply_style(segments, console.get_style(text.style))
        return Strip(list(segments)).crop_extend(0, width, style).apply_style(style)

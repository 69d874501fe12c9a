"""The multi-line message input: Enter sends, Ctrl+J inserts a newline, Up/Down recall history.

Shift+Enter cannot be told from Enter over SSH, so the newline key is Ctrl+J
(and Alt+Enter in terminals that report it, e.g. with the kitty keyboard
protocol). Tab completes slash commands.

Keys typed faster than the screen (a fast typist, a laggy SSH link, tmux
send-keys) arrive in one burst. Enter is a priority key, handled by the app
as soon as it arrives, while the characters before it still wait in this
widget's queue; so Enter and Ctrl+J do their work from that same queue
(``call_later``), after every character typed before them. Pasted text keeps
its order, its line breaks become newlines and other control characters are
shown as visible symbols (what is shown is what is sent).
"""

from __future__ import annotations

from typing import Callable

from textual import events
from textual.actions import SkipAction
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

from backends.core.sanitize import visible_text

from ..commands import common_prefix, complete


class PromptInput(TextArea):
    BINDINGS = [
        Binding("enter", "submit", "Send", id="input.send", priority=True, tooltip="send the message or command"),
        Binding("ctrl+j,alt+enter", "newline", "Newline", key_display="^j", id="input.newline", priority=True,
                tooltip="new line (Alt+Enter only where the terminal reports it)"),
        Binding("tab", "complete", "Complete", show=False, id="input.complete", priority=True,
                tooltip="complete a /command, its parameter or a model name"),
        Binding("up", "history(-1)", "Previous message", show=False, id="input.history-back", priority=True,
                tooltip="earlier messages, when the input is empty"),
        Binding("down", "history(1)", "Next message", show=False, id="input.history-forward", priority=True,
                tooltip="later messages"),
    ]

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Completions(Message):
        """Several completions fit; the app shows them on one line."""

        def __init__(self, options: list[str]) -> None:
            super().__init__()
            self.options = options

    def __init__(self, *, completion_sources: Callable[[], dict] | None = None, **kwargs) -> None:
        kwargs.setdefault("soft_wrap", True)
        kwargs.setdefault("show_line_numbers", False)
        kwargs.setdefault("tab_behavior", "focus")
        kwargs.setdefault("compact", True)
        super().__init__(**kwargs)
        self.sent: list[str] = []
        self._history_pos: int | None = None  # index into history while browsing
        self._completion_sources = completion_sources or (lambda: {})

    # -- sending ----------------------------------------------------------------

    def action_submit(self) -> None:
        self.call_later(self._submit)  # after the keys typed before Enter

    def _submit(self) -> None:
        if self.text.strip():
            self.post_message(self.Submitted(self.text))

    def accept(self) -> None:
        """The app took the text: remember it and empty the input."""
        text = self.text
        if text.strip() and (not self.sent or self.sent[-1] != text):
            self.sent.append(text)
        self._history_pos = None
        self.clear()

    def action_newline(self) -> None:
        self.call_later(self.insert_text, "\n")  # after the keys typed before it

    def insert_text(self, text: str) -> None:
        """Put ``text`` where the cursor is (over the selection), as typing would."""
        if result := self._replace_via_keyboard(text, *self.selection):
            self.move_cursor(result.end_location)

    async def _on_paste(self, event: events.Paste) -> None:
        event.prevent_default()  # not TextArea's own paste: it would insert the raw text
        event.stop()
        self.insert_text(pasted_text(event.text))
        self.focus()

    # -- history ----------------------------------------------------------------

    def action_history(self, step: int) -> None:
        browsing = self._history_pos is not None and self.text == self.sent[self._history_pos]
        if not self.sent or not (browsing or not self.text):
            raise SkipAction()  # an ordinary cursor move
        if not browsing:
            if step > 0:
                raise SkipAction()
            pos = len(self.sent) - 1
        else:
            pos = self._history_pos + step
        if pos >= len(self.sent):
            self._history_pos = None
            self.clear()
            return
        pos = max(pos, 0)
        self._history_pos = pos
        self.load_text(self.sent[pos])
        self.move_cursor(self.document.end)

    # -- completion -------------------------------------------------------------

    def action_complete(self) -> None:
        text = self.text
        if not text.startswith("/"):
            raise SkipAction()  # Tab moves focus as usual
        options = complete(text, **self._completion_sources())
        if not options:
            raise SkipAction()
        prefix = common_prefix(options)
        if len(prefix) > len(text):
            self.load_text(prefix)
            self.move_cursor(self.document.end)
        if len(options) > 1:
            self.post_message(self.Completions(options))


def pasted_text(text: str) -> str:
    """Pasted text as it goes into the input: CR LF and CR become newlines (terminals send line
    breaks as CR), other control characters visible symbols, so a paste never acts on the terminal."""
    return visible_text(text.replace("\r\n", "\n").replace("\r", "\n"))

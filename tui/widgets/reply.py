"""The messages of the chat: what the user sent, a model's reply (one Markdown, streamed), a notice.

Model text is passed through ``visible_text`` before it reaches a widget, so
escape sequences show as ␛ and are never sent to the terminal; it goes into
Markdown or ``Content`` objects, never into console markup.
"""

from __future__ import annotations

import re
import time
from typing import Callable

from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Markdown, Static

from backends.core.events import stats_parts
from backends.core.sanitize import visible_text

from ..messages import TokensArrived
from ..pump import Pace
from .token_pane import TokenPane
from .tools import call_lines

#: Longer user messages are shown cut (the model still gets all of it), so a
#: huge paste cannot stall the screen.
SHOWN_CHARS = 20_000

#: Streamed text reaches the screen at most this often …
MIN_FLUSH_INTERVAL = 0.05
#: … and less often when drawing costs more than this share of one core. The
#: UI thread holds the GIL while it draws, which slows generation by about as
#: much, so the screen's share is kept small; the cost is measured, not guessed.
UI_SHARE = 0.02
#: Never fewer than two screen updates a second, however costly they are.
MAX_FLUSH_INTERVAL = 0.5

_FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)


def shown(text: str, limit: int | None = SHOWN_CHARS) -> str:
    safe = visible_text(text)
    if limit is not None and len(safe) > limit:
        return safe[:limit] + f"\n… ({len(safe) - limit:,} more characters not shown)"
    return safe


def last_code_block(text: str) -> str | None:
    blocks = _FENCE.findall(text)
    return blocks[-1][1] if blocks else None


def stats_line(model: str | None, stats: dict | None, stop_reason: str | None) -> str:
    parts = [model] if model else []
    parts += stats_parts(stats or {}, ("new", "ttft", "rate", "cached"))
    if stop_reason:
        parts.append({"eos": "done", "length": "hit max_new_tokens"}.get(stop_reason, stop_reason))
    return " · ".join(parts)


class UserMessage(Static):
    def __init__(self, text: str) -> None:
        super().__init__(Content(shown(text)), classes="message user")
        self.text = text


class Notice(Static):
    """One line of feedback: a bad command, a saved file, an error."""

    def __init__(self, text: str, *, error: bool = False) -> None:
        super().__init__(Content(visible_text(text)), classes="notice -error" if error else "notice")


class Reply(Vertical):
    """One assistant reply: a Markdown fed by a MarkdownStream while it streams.

    While it streams, the generation's pump posts ``TokensArrived`` to it
    directly; ``pace`` tells the pump how often it wants them, and
    ``on_progress(n_tokens)`` (when set) hears how far it got.
    """

    def __init__(self, model: str, text: str = "", *, status: str | None = None,
                 stats: dict | None = None, tokens: list | None = None, message_id: int | None = None,
                 branch: tuple[int, int] | None = None, classes: str = "") -> None:
        super().__init__(classes=f"message reply {classes}".strip())
        self.model = model
        #: Whose token IDs these are (model, engine, weights); a branch goes on from them only there.
        #: None for replies saved before it was kept: then the model's name is all there is.
        self.made_by: str | None = (stats or {}).get("made_by")
        self.stats = stats  # the figures of the finished reply, as saved
        self.message_id = message_id  # its row in the database, where its branches hang
        self.branch = branch  # (which, of how many) when the turn has other replies
        self.text = text
        self.status = status
        self._stream = None
        self._pending: list[str] = []
        self._last_flush: tuple[float, float] | None = None  # (wall, UI thread CPU) at the last flush
        self._flush_timer = None
        self.flush_interval = MIN_FLUSH_INTERVAL  # seconds between screen updates, kept within UI_SHARE
        self._markdown = Markdown(shown(text, None) if text else None, open_links=False)
        self._token_view = TokenPane(classes="tokens")  # the reply token by token (colours, cursor)
        self._token_view.display = False
        self._stats = Static(classes="stats")
        self._calls = Static(classes="calls")  # the tool calls the reply makes, and what became of each
        self._calls.display = False
        self._initial_stats = stats
        self.n_tokens = 0
        #: The reply's tokens as they came (``TokenEvent``s, or stored tokens when reopened): IDs, texts,
        #: probabilities. Empty where the engine gave text only, or for replies saved before.
        self.tokens: list = list(tokens or [])
        #: One style per token in place of the probability colours (a compared reply's divergence), or None.
        self.token_styles: list[str] | None = None
        #: A compared reply: its pane's number, what its stats line adds (weights), and whether it is kept.
        self.pane_number: int | None = None
        self.detail = ""
        self.kept_note = ""
        self.pace = Pace()
        self.on_progress: Callable[[int], None] | None = None
        self._frozen = status is not None  # a finished reply takes no more text

    def compose(self):
        yield self._markdown
        yield self._token_view
        yield self._calls
        yield self._stats

    def show_tokens(self, *, colour: bool, cursor: int | None = None) -> bool:
        """Draw the reply token by token (coloured by probability, with a cursor), or as Markdown
        again when neither is wanted; False when it has no tokens to draw."""
        colour = colour or self.token_styles is not None
        wanted = bool(self.tokens) and (colour and self.status is not None or cursor is not None)
        self._markdown.display = not wanted
        self._token_view.display = wanted
        if wanted:
            styles = self.token_styles if self.token_styles is not None and len(self.token_styles) == len(self.tokens) else None
            self._token_view.show(self.tokens, colour=colour, cursor=cursor, styles=styles)
        return bool(self.tokens)

    def cursor_widget(self):
        """What to scroll into view for the token cursor: its chunk of the reply, else the reply."""
        return self._token_view.cursor_widget() or self

    def on_mount(self) -> None:
        if self.status is None:
            self.set_stats(f"{self.model} · generating…")
            self.add_class("-streaming")
        else:
            self._show_end(self.status, self._initial_stats, self._initial_stats.get("stop_reason")
                           if self._initial_stats else None)
            self._draw_calls()

    @property
    def tool(self) -> dict:
        """The reply's tool calls as saved (``stats["tool"]``): each call and its outcome; empty for none."""
        return (self.stats or {}).get("tool") or {}

    def show_calls(self, tool: dict) -> None:
        """The reply is a tool call: keep ``tool`` with its figures and draw each call's line."""
        self.stats = {**(self.stats or {}), "tool": tool}
        self._draw_calls()

    def _draw_calls(self) -> None:
        calls = bool(self.tool.get("calls"))
        if calls:
            self._calls.update(call_lines(self.tool))
        self._calls.display = calls

    def set_stats(self, text: str) -> None:
        self._stats.update(Content(visible_text(text)))

    async def on_tokens_arrived(self, message: TokensArrived) -> None:
        if self._frozen:
            return  # the turn was abandoned: what it had is saved, and shown
        self.tokens.extend(message.tokens)
        await self.write(message.text, message.n_tokens)
        self.pace.interval = self.flush_interval

    def freeze(self) -> None:
        """Take no more streamed text (the turn was abandoned; what is shown is what is saved)."""
        self._frozen = True

    async def write(self, delta: str, n_tokens: int) -> bool:
        """Take streamed text; returns True when it was put on screen now."""
        self.text += delta
        self.n_tokens += n_tokens
        self._pending.append(visible_text(delta))
        wait = 0.0
        if self._last_flush is not None:
            wall, cpu = self._last_flush
            # What the UI thread spent since the last update (drawing it included) sets the pace.
            spent = time.thread_time() - cpu
            self.flush_interval = min(MAX_FLUSH_INTERVAL, max(MIN_FLUSH_INTERVAL, spent / UI_SHARE))
            wait = wall + self.flush_interval - time.perf_counter()
        if wait > 0:
            if self._flush_timer is None:
                self._flush_timer = self.set_timer(wait, self._flush)
            return False
        await self._flush()
        return True

    async def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.stop()
            self._flush_timer = None
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._last_flush = (time.perf_counter(), time.thread_time())
        if self._stream is None:
            self._stream = Markdown.get_stream(self._markdown)
        await self._stream.write(text)
        if self.on_progress is not None:
            self.on_progress(self.n_tokens)

    async def finish(self, text: str, status: str, stats: dict | None, stop_reason: str | None) -> None:
        """End of the reply: one full update puts back what streaming may have missed (code fences)."""
        self._frozen = True
        if self._flush_timer is not None:
            self._flush_timer.stop()
            self._flush_timer = None
        self._pending.clear()
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.text = text
        self.stats = stats
        self._draw_calls()
        await self._markdown.update(shown(text, None))
        self._show_end(status, stats, stop_reason)

    def _show_end(self, status: str, stats: dict | None, stop_reason: str | None) -> None:
        self.status = status
        self.remove_class("-streaming")
        line = stats_line(self.model, stats, stop_reason if status == "complete" else None)
        if self.detail:
            line += f" · {self.detail}"
        if self.branch is not None:
            line += f" · branch {self.branch[0]} of {self.branch[1]} ([ ])"
        if self.text and not self.text.strip():
            line += f" · the reply is only whitespace ({len(self.text)} characters)"
        if status in ("stopped", "partial"):
            line += " · stopped" if status == "stopped" else " · interrupted"
            self.add_class("-stopped")
        elif status == "error":
            self.add_class("-error")
        if self.kept_note:
            line += f" · {self.kept_note}"
        self.set_stats(line)

    def refresh_stats(self) -> None:
        """Write the stats line again (what it adds changed); a reply still streaming keeps its own."""
        if self.status is not None and self.is_mounted:
            self._show_end(self.status, self.stats, (self.stats or {}).get("stop_reason"))

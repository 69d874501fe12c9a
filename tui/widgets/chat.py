"""The chat log: user messages, streamed replies (one Markdown each) and one-line notices.

A reopened conversation is shown from its end: the last ``SHOWN_AT_OPEN``
messages are put on screen, a few at a time, and the earlier ones wait above
them behind a line that says how many there are; Home (or scrolling to the
top) puts the next ``EARLIER_PAGE`` of them on screen. Every widget on screen
costs layout time on each frame, so a long conversation opened whole would
freeze the screen for as long as it takes to lay it out (measured here: half a
second for 100 turns).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Static

from .compared import ComparedTurn
from .reply import Notice, Reply, UserMessage
from .tools import ToolResult
from .token_view import word_starts

#: Messages put on screen when a saved conversation is opened, and at each step back.
SHOWN_AT_OPEN = 20
EARLIER_PAGE = 20
#: Messages mounted at once; the screen is drawn between two batches.
MOUNT_BATCH = 4


@dataclass(frozen=True)
class Saved:
    """A stored message not yet on screen: who said it, the text, and for a reply its model
    and ``Reply``'s other arguments (status, stats, tokens, message_id, branch)."""

    role: str
    text: str
    model: str = ""
    reply: dict = field(default_factory=dict)

    def widget(self) -> UserMessage | Reply | ComparedTurn | ToolResult:
        if self.role == "user":
            return UserMessage(self.text)
        if self.role == "tool":  # ``reply``: the tool's name, whether it failed, how long it took
            return ToolResult(self.reply.get("name") or "?", self.text, error=bool(self.reply.get("error")),
                              seconds=self.reply.get("seconds"))
        if self.role == "compared":  # ``reply``: the labels, each pane's Reply arguments, the kept one
            return ComparedTurn.saved(self.reply["labels"], self.reply["replies"], self.reply["kept"],
                                      self.reply["message_id"])
        return Reply(self.model, self.text, **self.reply)


class Earlier(Static):
    """The line above the messages on screen: how many earlier ones wait, and how to see them."""

    def show_count(self, count: int) -> None:
        more = min(count, EARLIER_PAGE)
        self.update(Content(f"▲ {count:,} earlier message{'s' if count != 1 else ''} · "
                            + ("scroll up or Home to show them" if more == count else
                               f"scroll up to show {more} more, Home for all")))

    def on_click(self) -> None:
        self.post_message(ChatLog.ShowEarlier())


class ChatLog(VerticalScroll, can_focus=True):
    """The conversation; stays pinned to the bottom while a reply streams.

    ``colour`` draws replies coloured by token probability. ``v`` puts a token
    cursor in the last reply: ←/h →/l by token, w/b by word, ↑/k ↓/j to another
    reply, 1-9 takes an alternative there, [ ] go through the turn's branches,
    Esc leaves. Where the cursor is, and what is asked for, goes out as
    messages (the app owns what follows).
    """

    BINDINGS = [
        Binding("v", "tokens", "Tokens", show=False, id="chat.tokens",
                tooltip="walk the last reply token by token (the inspector shows each one and its alternatives)"),
        Binding("left,h", "step(-1)", "Previous token", show=False, id="chat.token-back"),
        Binding("right,l", "step(1)", "Next token", show=False, id="chat.token-next"),
        Binding("b", "word(-1)", "Previous word", show=False, id="chat.word-back"),
        Binding("w", "word(1)", "Next word", show=False, id="chat.word-next"),
        Binding("up,k", "reply(-1)", "Previous reply", show=False, id="chat.reply-back"),
        Binding("down,j", "reply(1)", "Next reply", show=False, id="chat.reply-next"),
        Binding("left_square_bracket", "branch(-1)", "Previous branch", show=False, id="chat.branch-back"),
        Binding("right_square_bracket", "branch(1)", "Next branch", show=False, id="chat.branch-next"),
        Binding("escape", "leave", "Leave the tokens", show=False, id="chat.leave"),
        Binding("enter", "keep", "Keep this reply", show=False, id="chat.keep",
                tooltip="of a compared turn: the conversation goes on from the reply under the cursor"),
        *[Binding(str(n), f"alternative({n})", f"Alternative {n}", show=False, id=f"chat.alternative-{n}")
          for n in range(1, 10)],
    ]
    #: Bindings that work only while the cursor is in a reply.
    _CURSOR_ACTIONS = {"step", "word", "reply", "branch", "leave", "alternative", "keep"}

    @dataclass
    class TokenFocused(Message):
        """The cursor is on token ``index`` of ``reply``."""

        reply: "Reply"
        index: int

    @dataclass
    class TokensLeft(Message):
        """The cursor left the replies."""

    @dataclass
    class AlternativeChosen(Message):
        """Take alternative ``rank`` (1-based) at token ``index`` of ``reply`` and go on from there."""

        reply: "Reply"
        index: int
        rank: int

    @dataclass
    class ShowEarlier(Message):
        """Put the next page of earlier messages on screen (``every``: all of them, then the top)."""

        every: bool = False

    @dataclass
    class KeepChosen(Message):
        """Go on from ``reply`` (a compared turn's)."""

        reply: "Reply"

    @dataclass
    class BranchStep(Message):
        """Show the turn's next (``step`` 1) or previous (-1) branch in place of ``reply``."""

        reply: "Reply"
        step: int

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.colour = False
        self.cursor: tuple[Reply, int] | None = None
        self._earlier: list[Saved] = []  # oldest first; the last of them is just above the screen's first
        self._marker: Earlier | None = None

    def add_user(self, text: str) -> UserMessage:
        message = UserMessage(text)
        self.mount(message)
        self.anchor()
        return message

    async def add_reply(self, model: str, text: str = "", *, status: str | None = None,
                        stats: dict | None = None, tokens: list | None = None, message_id: int | None = None,
                        branch: tuple[int, int] | None = None) -> Reply:
        reply = Reply(model, text, status=status, stats=stats, tokens=tokens, message_id=message_id, branch=branch)
        await self.mount(reply)  # mounted before the first tokens are written to it
        self.anchor()
        if self.colour:
            reply.show_tokens(colour=True)
        return reply

    async def add_tool_result(self, name: str, text: str, *, error: bool = False,
                              seconds: float | None = None) -> ToolResult:
        result = ToolResult(name, text, error=error, seconds=seconds)
        await self.mount(result)
        self.anchor()
        return result

    def add_notice(self, text: str, *, error: bool = False) -> Notice:
        notice = Notice(text, error=error)
        self.mount(notice)
        self.anchor()
        return notice

    def last_reply(self) -> Reply | None:
        replies = self.query(Reply)
        return replies.last() if replies else None

    async def remove_from_last(self, kind: type) -> None:
        """Remove the last message of ``kind`` and everything after it."""
        children = list(self.children)
        kinds = (kind, ComparedTurn) if kind is Reply else kind  # a compared turn is the turn's reply
        for index in range(len(children) - 1, -1, -1):
            if isinstance(children[index], kinds):
                if self.cursor is not None and self.cursor[0] in children[index:]:
                    self.action_leave()
                await self.remove_children(children[index:])
                return

    async def clear(self, keep: tuple = ()) -> None:
        """Remove every message but those in ``keep``."""
        self.action_leave()
        self._earlier, self._marker = [], None
        if keep:
            await self.remove_children([child for child in self.children if child not in keep])
        else:
            await self.remove_children()

    # -- a saved conversation, shown from its end -----------------------------------------------

    async def show_saved(self, saved: list[Saved]) -> None:
        """Put a saved conversation on screen after what it holds: its last ``SHOWN_AT_OPEN``
        messages, the rest behind the ``Earlier`` line."""
        self._earlier = list(saved[:-SHOWN_AT_OPEN])
        if self._earlier:
            self._marker = Earlier(classes="earlier")
            self._marker.show_count(len(self._earlier))
            await self.mount(self._marker)
        await self._mount_saved(saved[-SHOWN_AT_OPEN:])
        self.anchor()

    @property
    def earlier_count(self) -> int:
        """Messages of the conversation not on screen yet (above the first one that is)."""
        return len(self._earlier)

    def reply_models(self) -> list[str]:
        """The model of each reply of the conversation, oldest first, on screen or not (of a compared
        turn, the kept reply's)."""
        shown = [c.model if isinstance(c, Reply) else c.panes[c.kept or 0].model
                 for c in self.children if isinstance(c, (Reply, ComparedTurn))]
        return [s.model for s in self._earlier if s.role in ("assistant", "compared")] + shown

    async def show_earlier(self, every: bool = False) -> None:
        """Put the next ``EARLIER_PAGE`` earlier messages on screen, keeping what was on top in view;
        ``every``: all of them, and go to the first."""
        if not self._earlier or self._marker is None:
            return
        size = len(self._earlier) if every else EARLIER_PAGE
        page, self._earlier = self._earlier[-size:], self._earlier[:-size]
        first = self._marker
        widgets = await self._mount_saved(page, after=self._marker)
        top = widgets[-1] if widgets else first
        if self._earlier:
            self._marker.show_count(len(self._earlier))
        else:
            await self._marker.remove()
            self._marker = None
        if every:
            self.call_after_refresh(self.scroll_home, animate=False)
        else:
            self.call_after_refresh(self._keep_in_view, top)

    def _keep_in_view(self, above) -> None:
        """After a page went in above: the message that was at the top stays there."""
        children = list(self.children)
        if above in children and children.index(above) + 1 < len(children):
            self.scroll_to_widget(children[children.index(above) + 1], top=True, animate=False)

    async def _mount_saved(self, saved: list[Saved], after=None) -> list:
        mounted: list = []
        for start in range(0, len(saved), MOUNT_BATCH):
            batch = [s.widget() for s in saved[start:start + MOUNT_BATCH]]
            if after is None:
                await self.mount_all(batch)
            else:
                await self.mount_all(batch, after=mounted[-1] if mounted else after)
            mounted += batch
        if self.colour:
            for widget in mounted:
                if isinstance(widget, Reply):
                    widget.show_tokens(colour=True)
        return mounted

    def on_chat_log_show_earlier(self, message: "ChatLog.ShowEarlier") -> None:
        message.stop()
        self.run_worker(self.show_earlier(message.every), group="earlier")

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new <= 0 < old and self._earlier:  # scrolled up to the top: what is above comes in
            self.post_message(self.ShowEarlier())

    def action_scroll_home(self) -> None:
        if self._earlier:  # the conversation's start: what is not on screen yet comes in first
            self.post_message(self.ShowEarlier(every=True))
        else:
            super().action_scroll_home()

    def move_to_end(self, widgets) -> None:
        """Put ``widgets`` after everything else, in their order."""
        for widget in widgets:
            if self.children and widget is not self.children[-1]:
                self.move_child(widget, after=self.children[-1])
        self.anchor()

    # -- colour and the token cursor -------------------------------------------------------------

    def set_colour(self, on: bool) -> None:
        self.colour = on
        for reply in self.query(Reply):
            reply.show_tokens(colour=on, cursor=self._cursor_in(reply))

    def redraw(self, reply: Reply) -> None:
        """A reply's tokens changed (it ended, or a branch took its place)."""
        reply.show_tokens(colour=self.colour, cursor=self._cursor_in(reply))

    def _cursor_in(self, reply: Reply) -> int | None:
        return self.cursor[1] if self.cursor is not None and self.cursor[0] is reply else None

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in self._CURSOR_ACTIONS and self.cursor is None:
            return False  # not walking the tokens: the keys are the app's (1-9 switch models, Esc …)
        return True

    def _replies(self) -> list[Reply]:
        return [r for r in self.query(Reply) if r.tokens]

    def _move(self, reply: Reply, index: int) -> None:
        previous = self.cursor[0] if self.cursor is not None else None
        entering = self.cursor is None
        self.cursor = (reply, max(0, min(index, len(reply.tokens) - 1)))
        if entering:
            self.refresh_bindings()  # the cursor's keys (Esc leaves, 1-9, Enter) take over from the app's
        if previous is not None and previous is not reply:
            previous.show_tokens(colour=self.colour)
        reply.show_tokens(colour=self.colour, cursor=self.cursor[1])
        reply.cursor_widget().scroll_visible(animate=False)
        self.post_message(self.TokenFocused(reply, self.cursor[1]))

    def action_tokens(self) -> None:
        replies = self._replies()
        if not replies:
            self.notify("no reply has tokens to walk yet", severity="warning", markup=False)
            return
        self._move(replies[-1], 0)

    def action_step(self, step: int) -> None:
        reply, index = self.cursor
        self._move(reply, index + step)

    def action_word(self, step: int) -> None:
        reply, index = self.cursor
        starts = word_starts(reply.tokens)
        later = [s for s in starts if (s > index if step > 0 else s < index)]
        if later:
            self._move(reply, later[0] if step > 0 else later[-1])

    async def action_reply(self, step: int) -> None:
        replies = self._replies()
        reply, _ = self.cursor
        position = replies.index(reply) + step if reply in replies else len(replies) - 1
        while position < 0 and self._earlier:  # before the first reply on screen: bring earlier ones in
            await self.show_earlier()
            replies = self._replies()
            position = replies.index(reply) + step
        if 0 <= position < len(replies):
            self._move(replies[position], 0)

    def action_keep(self) -> None:
        self.post_message(self.KeepChosen(self.cursor[0]))

    def action_branch(self, step: int) -> None:
        self.post_message(self.BranchStep(self.cursor[0], step))

    def action_alternative(self, rank: int) -> None:
        reply, index = self.cursor
        self.post_message(self.AlternativeChosen(reply, index, rank))

    def action_leave(self) -> None:
        if self.cursor is None:
            return
        reply, _ = self.cursor
        self.cursor = None
        self.refresh_bindings()  # the app's keys again (Esc stops, 1-9 switch models)
        if reply.is_attached:
            reply.show_tokens(colour=self.colour)
        self.post_message(self.TokensLeft())

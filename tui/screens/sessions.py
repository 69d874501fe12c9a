"""Saved conversations: pick one to reopen (F3)."""

from __future__ import annotations

import time

from textual import on
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from backends.core.sanitize import visible_text


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


class SessionsScreen(ModalScreen[int | None]):
    """Returns the id of the conversation to open, or None."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="sessions.close"),
        Binding("delete", "delete", "Delete", id="sessions.delete"),
    ]

    def __init__(self, store, current: int | None = None) -> None:
        super().__init__()
        self.store = store
        self.current = current
        self.summaries = store.list_conversations(limit=200) if store is not None else []

    def compose(self):
        with Vertical(id="sessions-body") as body:
            body.border_title = "Conversations — Enter opens, Del deletes, Esc closes"
            if not self.summaries:
                yield Static(Content("No saved conversations yet."), id="sessions-empty")
            yield OptionList(*[self._option(s) for s in self.summaries], id="sessions-list")

    def _option(self, s) -> Option:
        mark = " (open)" if s.id == self.current else ""
        prompt = Content.assemble((visible_text(s.label), "bold"), (mark, "italic"), "\n",
                                  (f"{_when(s.updated)} · {s.message_count} messages · "
                                   f"{visible_text(s.model or 'no model')}", "dim"))
        return Option(prompt, id=f"conv-{s.id}")

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.summaries[event.option_index].id)

    def action_delete(self) -> None:
        options = self.query_one(OptionList)
        index = options.highlighted
        if index is None or not self.summaries:
            return
        summary = self.summaries[index]
        if summary.id == self.current:
            self.notify("this conversation is open; start a new one (Ctrl+N) before deleting it", severity="warning", markup=False)
            return
        self.store.delete_conversation(summary.id)
        del self.summaries[index]
        options.remove_option_at_index(index)

"""The help screen: every key and slash command, read from the bindings themselves."""

from __future__ import annotations

from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from ..commands import COMMANDS


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q,question_mark", "dismiss", "Close", id="help.close")]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections  # (title, [(keys, what they do)])

    def compose(self):
        width = max((len(k) for _, rows in self.sections for k, _ in rows), default=8) + 2
        lines: list[Content] = []
        for title, rows in self.sections:
            lines += [Content.styled(title, "bold")]
            lines += [Content.assemble((key.ljust(width), "bold $accent"), text) for key, text in rows]
            lines += [Content("")]
        lines += [Content.styled("Commands (type in the input; Tab completes)", "bold")]
        cwidth = max(len(f"/{c.name} {c.usage}") for c in COMMANDS) + 2
        lines += [Content.assemble((f"/{c.name} {c.usage}".ljust(cwidth), "bold $accent"), c.help) for c in COMMANDS]
        lines += [Content(""), Content("Start a message with // to send text that begins with a slash.")]
        with VerticalScroll(id="help-body") as body:
            body.border_title = "Help — Esc closes"
            yield Static(Content("\n").join(lines), id="help-text")

"""Says that the conversation database is damaged, and offers to move it aside and start a new one."""

from __future__ import annotations

from textual import on
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from backends.core.sanitize import visible_text


class DamagedStoreScreen(ModalScreen[bool]):
    """Returns True when the user chose to move the damaged file aside (m)."""

    AUTO_FOCUS = "#keep"

    BINDINGS = [
        Binding("m", "dismiss(True)", "Move aside", id="damaged.move"),
        Binding("escape", "dismiss(False)", "Close", id="damaged.close"),
    ]

    def __init__(self, path: str, detail: str) -> None:
        super().__init__()
        self.path = path
        self.detail = detail

    def compose(self):
        with Vertical(id="damaged-body") as body:
            body.border_title = "The conversation database is damaged"
            yield Static(Content.assemble(
                ("File: ", "bold"), visible_text(self.path), "\n",
                ("SQLite says: ", "bold"), visible_text(self.detail), "\n\n",
                "Nothing is written to it: this conversation is not being saved.\n",
                ("Move aside (m)", "bold"), ": rename it (with its -wal and -shm files) to ",
                visible_text(self.path), ".damaged-DATE, start a new database there and save this "
                "conversation into it. The old file stays, for sqlite3's .recover.\n",
                ("Close (Esc)", "bold"), ": leave things as they are"), id="damaged-text")
            with Horizontal(id="damaged-buttons"):
                yield Button("Move aside (m)", id="move", variant="warning")
                yield Button("Close (Esc)", id="keep")

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "move")

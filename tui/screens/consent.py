"""Asks before a checkpoint's own Python files run: lists each file, its size and SHA-256."""

from __future__ import annotations

from textual import on
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from backends.checkpoint.consent import CodeFile
from backends.core.sanitize import visible_text


class ConsentScreen(ModalScreen[bool]):
    """Returns True only when the user allows the code to run."""

    AUTO_FOCUS = "#refuse"  # Enter on its own never runs the code

    BINDINGS = [
        Binding("escape,n", "dismiss(False)", "Do not run", id="consent.refuse"),
        Binding("y", "dismiss(True)", "Run it", id="consent.accept"),
    ]

    def __init__(self, model: str, folder: str, files: list[CodeFile]) -> None:
        super().__init__()
        self.model = model
        self.folder = folder
        self.files = files

    def compose(self):
        with Vertical(id="consent-body") as body:
            body.border_title = "This model wants to run its own code"
            yield Static(Content.assemble(
                (visible_text(self.model), "bold"),
                " ships Python files that transformers would import and run with your permissions. "
                "Read them before you allow it:\n", (visible_text(self.folder), "dim")), id="consent-intro")
            with VerticalScroll(id="consent-files"):
                for f in self.files:
                    yield Static(Content.assemble((visible_text(f.name), "bold"), f"  {f.size:,} bytes\n",
                                                  ("sha256 " + f.sha256, "dim")), classes="consent-file")
            with Horizontal(id="consent-buttons"):
                yield Button("Run it (y)", id="accept", variant="warning")
                yield Button("Do not run (n)", id="refuse", variant="primary")

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "accept")

"""Asks before a tool call runs: the tool, who runs it, and its arguments exactly as the model wrote them.

The answer is ``"yes"`` (run it), ``"always"`` (run it, and this tool's later calls in this
conversation without asking) or ``"no"``; Esc and Enter on its own say no, so nothing runs
by accident. The dialog sits at the foot of the screen: the reply that made the call stays
in view above it.
"""

from __future__ import annotations

import json

from textual import on
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from backends.core.sanitize import visible_text
from backends.prompt.tools.calls import ToolCall


class ToolConsentScreen(ModalScreen[str]):
    AUTO_FOCUS = "#tool-no"

    BINDINGS = [
        Binding("y", "dismiss('yes')", "Run it", id="tool-consent.yes"),
        Binding("a", "dismiss('always')", "Always (this conversation)", id="tool-consent.always"),
        Binding("escape,n", "dismiss('no')", "Do not run", id="tool-consent.no"),
    ]

    def __init__(self, call: ToolCall, runs_on: str, *, step: int, of: int) -> None:
        super().__init__()
        self.call = call
        self.runs_on = runs_on
        self.step = step
        self.of = of

    def compose(self):
        with Vertical(id="tool-consent-body") as body:
            body.border_title = f"Run this tool call? (tool round {self.step} of at most {self.of})"
            yield Static(Content.assemble(
                ("⚙ ", "bold"), (visible_text(self.call.name), "bold"), " on ", (visible_text(self.runs_on), "bold"),
                ("  · it runs with your permissions; read the arguments first", "$text-muted")), id="tool-consent-what")
            with VerticalScroll(id="tool-consent-arguments"):
                yield Static(Content(visible_text(json.dumps(self.call.arguments, ensure_ascii=False, indent=2))))
            with Horizontal(id="tool-consent-buttons"):
                yield Button("Run it (y)", id="tool-yes", variant="warning")
                yield Button("Always for this tool (a)", id="tool-always")
                yield Button("Do not run (n)", id="tool-no", variant="primary")

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss({"tool-yes": "yes", "tool-always": "always"}.get(event.button.id, "no"))

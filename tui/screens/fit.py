"""Asks what to do when the next turn is over the model's context or would not fit in memory.

Shows the numbers and what the model family's truncation would leave out to
make the prompt fit. The answer is "truncate", "shorter" (a smaller
max_new_tokens, over the context only), "send" (anyway: memory only, where the
estimate may be wrong) or None (cancel).
"""

from __future__ import annotations

from textual import on
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from backends.core.sanitize import visible_text
from backends.memory.fit import TurnFit


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


class FitScreen(ModalScreen[str | None]):
    """Truncate the history (t), a shorter reply (r) or send anyway (s), or cancel (Esc)."""

    AUTO_FOCUS = "#truncate"

    BINDINGS = [
        Binding("t", "choose('truncate')", "Truncate", id="fit.truncate"),
        Binding("r", "choose('shorter')", "Shorter reply", id="fit.shorter"),
        Binding("s", "choose('send')", "Send anyway", id="fit.send"),
        Binding("escape", "choose(None)", "Cancel", id="fit.cancel"),
    ]

    def __init__(self, fit: TurnFit) -> None:
        super().__init__()
        self.fit = fit

    def compose(self):
        fit = self.fit
        context = fit.over == "context"
        with Vertical(id="fit-body") as body:
            body.border_title = ("This turn does not fit the model's context" if context
                                 else "This turn may not fit in memory")
            yield Static(Content(visible_text(fit.message)), id="fit-numbers")
            yield Static(self.truncation_text(), id="fit-truncation")
            if context:
                room = fit.reply_room
                other = Content.assemble(
                    ("Shorter reply (r)", "bold"),
                    f": max_new_tokens {room:,}, the room the context leaves after this prompt\n" if room else
                    ": not possible, the prompt alone fills the context\n",
                    ("Cancel (Esc)", "bold"), ": your message goes back to the input. A prompt past the "
                    "context is never sent as it is")
            else:
                other = Content.from_markup(
                    "[b]Send anyway (s)[/b]: if memory runs out, the partial reply is kept and marked\n"
                    "[b]Cancel (Esc)[/b]: your message goes back to the input")
            yield Static(other, id="fit-other")
            with Horizontal(id="fit-buttons"):
                yield Button("Truncate (t)", id="truncate", variant="primary", disabled=not fit.can_truncate)
                if context:
                    yield Button("Shorter reply (r)", id="shorter", disabled=not fit.reply_room)
                else:
                    yield Button("Send anyway (s)", id="send", variant="warning")
                yield Button("Cancel (Esc)", id="cancel")

    def truncation_text(self) -> Content:
        fit, cut = self.fit, self.fit.cut
        if not fit.can_truncate:
            why = ("not even a one-token prompt fits" if fit.budget == 0 else
                   "the free memory is unknown" if fit.budget is None else
                   f"the last message alone is {len(cut.ids):,} tokens, over the {fit.budget:,} that fit"
                   if cut is not None else "nothing can be left out")
            return Content.assemble(("Truncate (t)", "bold"), ": not possible, ", why)
        whole = [d for d in cut.dropped if not d.partial]
        parts = [_plural(len(whole), "older message")] if whole else []
        if len(whole) != len(cut.dropped):
            parts.append("the start of one")
        left_out = " and ".join(parts) or "nothing"
        return Content.assemble(
            ("Truncate (t)", "bold"), f": keep each prompt within {fit.budget:,} tokens (/budget) by ",
            f"{visible_text(fit.rule)}. This leaves out {left_out} ({_plural(cut.dropped_tokens, 'token')}): ",
            f"the prompt goes from {fit.prompt_tokens:,} to {len(cut.ids):,} tokens; the inspector shows "
            "what is left out")

    def action_choose(self, choice: str | None) -> None:
        fit = self.fit
        if choice == "truncate" and not fit.can_truncate:
            self.notify("truncating cannot make this turn fit", severity="warning", markup=False)
            return
        if choice == "send" and fit.over == "context":
            return  # past the context the model cannot read the prompt: never sent as it is
        if choice == "shorter" and not fit.reply_room:
            self.notify("the prompt alone fills the context: truncate it, or cancel", severity="warning",
                        markup=False)
            return
        self.dismiss(choice)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.action_choose(None if event.button.id == "cancel" else event.button.id)

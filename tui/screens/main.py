"""The main screen: keys and pastes that reach it from the chat or a pane go to the input.

After Esc the input is left (so 1-9, ?, y and c work as keys), but a character
typed or a paste made then belongs in the input, and an Enter right after it
sends it. Those events reach this screen by bubbling up from whichever widget
had the focus, in the order they were typed, so they are handled here rather
than on the app (which sees a burst's Enter before the widget has dealt with
the keys in front of it).

The input takes every character typed into it and every paste, so one that reaches
this screen came from elsewhere, even when the focus is on the input by then: the
first key of a burst moved it there while the rest of the burst was already on its
way to the pane that had it. Those keys, and pastes, go into the input too.
"""

from __future__ import annotations

from textual import events
from textual.screen import Screen

from ..widgets.prompt_input import PromptInput, pasted_text


class MainScreen(Screen):
    def __init__(self, prompt_input: PromptInput) -> None:
        super().__init__(id="_default")
        self.prompt_input = prompt_input

    def on_key(self, event: events.Key) -> None:
        target = self.prompt_input
        if event.key == "enter" and target.text.strip():
            # An Enter that reached the screen was not the input's (its own Enter is a priority
            # key): it came behind keys that moved the focus there, and it sends what they typed.
            event.stop()
            target.action_submit()
        elif event.is_printable and event.character and (self.focused is target
                                                          or not self.active_bindings.get(event.key)):
            # A key of the burst that an earlier one took to the input is text, as it would have
            # been had it been typed a moment later; otherwise a key bound here keeps its action.
            event.stop()
            self.set_focus(target)  # at once: the next key of the burst goes there too
            target.insert_text(event.character)

    def on_paste(self, event: events.Paste) -> None:
        event.stop()
        self.set_focus(self.prompt_input)
        self.prompt_input.insert_text(pasted_text(event.text))

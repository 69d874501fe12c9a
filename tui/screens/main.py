"""The main screen: keys and pastes that reach it from the chat or a pane go to the input.

After Esc the input is left (so 1-9, ?, y and c work as keys), but a character
typed or a paste made then belongs in the input, and an Enter right after it
sends it. Those events reach this screen by bubbling up from whichever widget
had the focus, in the order they were typed, so they are handled here rather
than on the app (which sees a burst's Enter before the widget has dealt with
the keys in front of it).
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
        elif self.focused is not target and event.is_printable and event.character and not self.active_bindings.get(event.key):
            event.stop()
            self.set_focus(target)  # at once: the next key of the burst goes there too
            target.insert_text(event.character)

    def on_paste(self, event: events.Paste) -> None:
        if self.focused is not self.prompt_input:
            event.stop()
            self.set_focus(self.prompt_input)
            self.prompt_input.insert_text(pasted_text(event.text))

"""Keys as the user types them, read from the bindings with the config's keymap applied, so the
help screen and the command palette never name a key that was remapped."""

from __future__ import annotations

from textual.binding import Binding

from .widgets.chat import ChatLog
from .widgets.prompt_input import PromptInput


def key_name(app, key: str) -> str:
    key = key.strip()
    if key[:1] == "f" and key[1:].isdigit():
        return key.upper()
    return app.get_key_display(Binding(key, ""))


def key_label(app, binding: Binding) -> str:
    """The keys that run ``binding`` now, comma-separated."""
    keys = app._keymap.get(binding.id, binding.key) if binding.id else binding.key
    return ", ".join(key_name(app, k) for k in keys.split(","))


def help_sections(app) -> list[tuple[str, list[tuple[str, str]]]]:
    """The help screen's sections: the app's keys, then the token cursor's."""
    rows = [(key_label(app, b), b.tooltip or b.description) for b in [*PromptInput.BINDINGS, *app.BINDINGS]
            if not (b.id or "").startswith("app.model-")]
    rows.append(("1-9, Alt+1-9", "switch model (1-9 outside the input; F2 then 1-9 anywhere)"))
    rows.append(("Ctrl+P", "command palette: every action, themes"))
    rows.append(("Tab, Shift+Tab", "move between the input, the chat and the panes"))
    rows.append(("Ctrl+Q", "quit"))
    cursor = [(key_label(app, b), b.tooltip or b.description.lower()) for b in ChatLog.BINDINGS
              if not (b.id or "").startswith("chat.alternative-")]
    cursor.append(("1-9", "branch: write the reply again from this token, choosing alternative n"))
    return [("Keys", rows), ("On a reply's tokens (v in the chat)", cursor)]

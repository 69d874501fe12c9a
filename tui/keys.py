"""The app's keys. Each binding has an id, so the config's ``[keys]`` table can remap it, and the
help screen and the command palette read the keys from here (remapped keys show as remapped)."""

from __future__ import annotations

from textual.binding import Binding

APP_BINDINGS = [
    Binding("escape", "stop", "Stop", id="app.stop",
            tooltip="stop the reply; in the input, leave it (then 1-9, ?, y and c are keys)"),
    Binding("f1,question_mark", "help", "Help", key_display="F1", id="app.help", tooltip="this screen"),
    Binding("f2", "models", "Models", key_display="F2", id="app.models",
            tooltip="pick a model: command line, config aliases, HF cache, default"),
    Binding("f3", "sessions", "Sessions", key_display="F3", id="app.sessions",
            tooltip="saved conversations: reopen or delete"),
    Binding("ctrl+r", "regenerate", "Regen", id="app.regenerate", tooltip="regenerate the last reply"),
    Binding("ctrl+o", "edit_last", "Edit", id="app.edit",
            tooltip="put the last message back in the input to edit and resend"),
    Binding("ctrl+n", "new_conversation", "New", id="app.new",
            tooltip="start a new conversation (the current one is kept)"),
    Binding("f4", "inspector_mode", "Tokens", key_display="F4", priority=True, id="app.inspector-mode",
            tooltip="inspector view: token pieces, prompt text, or IDs"),
    Binding("f5", "toggle_pane('inspector')", "Inspector", key_display="F5", priority=True,
            id="app.toggle-inspector",
            tooltip="show or hide the inspector (full screen when narrow)"),
    Binding("f6", "toggle_pane('meter')", "Meter", key_display="F6", show=False, priority=True,
            id="app.toggle-meter",
            tooltip="show or hide the meter (full screen when narrow)"),
    Binding("f7", "zoom('inspector')", "Zoom inspector", show=False, priority=True,
            id="app.zoom-inspector",
            tooltip="inspector full screen (F7 or Esc returns)"),
    Binding("f8", "zoom('meter')", "Zoom meter", show=False, priority=True, id="app.zoom-meter",
            tooltip="meter full screen (F8 or Esc returns)"),
    Binding("f9", "memory", "Memory plot", show=False, priority=True, id="app.memory",
            tooltip="memory against context length: per turn, and a profile run (p there)"),
    Binding("ctrl+l", "clear", "Clear", show=False, id="app.clear", tooltip="clear the conversation"),
    Binding("ctrl+s", "save", "Export", show=False, id="app.save",
            tooltip="export the conversation as Markdown and JSON"),
    Binding("y", "copy_reply", "Copy reply", show=False, id="app.copy-reply",
            tooltip="copy the last reply to the clipboard (OSC 52)"),
    Binding("c", "copy_code", "Copy code", show=False, id="app.copy-code",
            tooltip="copy the last code block of the last reply"),
    Binding("t", "colour_tokens", "Token colours", show=False, id="app.colour-tokens",
            tooltip="colour each reply by how sure the model was of every token (v then walks them)"),
    Binding("d", "colour_divergence", "Divergence", show=False, id="app.colour-divergence",
            tooltip="colour each compared reply by its divergence from the reference, token by token"),
    # F4-F9 are priority keys: the input (a TextArea) would take F6 and F7 for selecting.
    # F6 is not in the footer: sharing a key with the input makes its place there vary.
    # Digits work outside the input; Alt+digit wherever the terminal reports it.
    *[Binding(str(n), f"switch_model({n})", f"Model {n}", show=False, id=f"app.model-{n}")
      for n in range(1, 10)],
    *[Binding(f"alt+{n}", f"switch_model({n})", f"Model {n}", show=False, priority=True,
              id=f"app.model-{n}-alt") for n in range(1, 10)],
]

#: The command palette's entry for each binding (by id); bindings not named here are not listed.
PALETTE_TITLES = {
    "app.models": "Models: pick a model",
    "app.new": "Conversation: new",
    "app.clear": "Conversation: clear",
    "app.regenerate": "Conversation: regenerate the last reply",
    "app.edit": "Conversation: edit the last message",
    "app.stop": "Conversation: stop generating",
    "app.save": "Conversation: export Markdown and JSON",
    "app.sessions": "Conversation: saved conversations",
    "app.copy-reply": "Copy: the last reply",
    "app.copy-code": "Copy: the last code block",
    "app.toggle-inspector": "Panes: show or hide the inspector",
    "app.toggle-meter": "Panes: show or hide the meter",
    "app.zoom-inspector": "Panes: zoom the inspector",
    "app.zoom-meter": "Panes: zoom the meter",
    "app.inspector-mode": "Panes: inspector view (text, pieces, ids)",
    "app.memory": "Panes: memory plot",
    "app.help": "Help: keys and commands",
    "app.colour-tokens": "Tokens: colour replies by probability",
    "app.colour-divergence": "Compare: colour replies by divergence from the reference",
}

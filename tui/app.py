"""LlmTuiApp: the main screen, its keys, panes, help and command palette.

Model work never runs here: loading, generation and prompt previews run in
thread workers (``worker.py``) and come back as typed messages, handled in
the mixins ``ChatFlow`` (turns), ``ModelFlow`` (models, preview),
``SessionFlow`` (saved conversations) and ``ProfileFlow`` (memory profiles).
Worker errors become one notification line in one place: ``worker_state_changed``.
"""

from __future__ import annotations

import asyncio
import signal
from functools import partial

from textual import on
from textual.app import App
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

from backends.core.conversation import Conversation
from backends.core.errors import LlmTuiError
from backends.core.params import SamplingParams
from backends.storage.config import save_default
from backends.storage.store import Store

from .chatflow import ChatFlow, Turn, TurnTiming
from .commands import AppCommands, PaletteCommand
from .modelflow import ModelFlow
from .models import Models
from .profileflow import ProfileFlow
from .screens.help import HelpScreen
from .screens.memory import MemoryScreen
from .session import Recorder
from .sessionflow import SessionFlow
from .settings import AppSettings, spec_for
from .widgets.chat import ChatLog
from .widgets.inspector import Inspector
from .widgets.meter import Meter
from .widgets.prompt_input import PromptInput
from .widgets.status import StatusBar
from .worker import error_line

_PANE_ACTIONS = {"inspector_mode", "toggle_pane", "zoom", "memory"}


class LlmTuiApp(ProfileFlow, ChatFlow, ModelFlow, SessionFlow, App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "llm-tui"
    COMMANDS = App.COMMANDS | {AppCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    BINDINGS = [
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
        # F4-F9 are priority keys: the input (a TextArea) would take F6 and F7 for selecting.
        # F6 is not in the footer: sharing a key with the input makes its place there vary.
        # Digits work outside the input; Alt+digit wherever the terminal reports it.
        *[Binding(str(n), f"switch_model({n})", f"Model {n}", show=False, id=f"app.model-{n}")
          for n in range(1, 10)],
        *[Binding(f"alt+{n}", f"switch_model({n})", f"Model {n}", show=False, priority=True,
                  id=f"app.model-{n}-alt") for n in range(1, 10)],
    ]

    def __init__(self, settings: AppSettings | None = None, *, config=None, handles: dict | None = None) -> None:
        super().__init__()
        self.settings = settings or AppSettings()
        self.config = config
        defaults = getattr(config, "defaults", None)
        self.params: SamplingParams = config.sampling_params() if config is not None else SamplingParams()
        self.conversation = Conversation()
        self.conversation.set_system(self.settings.system or getattr(defaults, "system", None))
        self.models = Models()
        default_name = getattr(defaults, "model", None) or "default"
        for name in self.settings.models or [None]:
            self.models.add(name or default_name, spec_for(name, self.settings.options, config))
        for index, handle in (handles or {}).items():  # models loaded elsewhere (tests, benchmarks)
            self.models.slots[index].handle = handle
        self.recorder = Recorder(None)
        self.turn: Turn | None = None
        self.turn_count = 0
        self.timings: list[TurnTiming] = []
        self._preview_timer = None
        self._preview_serial = 0
        self._closed = False
        self._hidden: set[str] = set()
        self.tracebacks: list[str] = []  # with --debug, worker errors in full
        self.profile_rows: list[dict] = []  # the last memory profile (/profile), of profile_model
        self.profile_model: str | None = None
        self.profile_handle = None  # the handle it was measured on
        self.profiling = None  # the ProfileRun being measured
        if config is not None and not self.settings.frozen:
            if getattr(defaults, "theme", None) and defaults.theme in self.available_themes:
                self.theme = defaults.theme
            if config.keys:
                self.set_keymap(config.keys)

    # -- layout and start ----------------------------------------------------------------------

    def compose(self):
        self.chat = ChatLog(id="chat")
        self.input = PromptInput(id="input", completion_sources=self._completion_sources)
        self.inspector = Inspector(id="inspector")
        self.meter = Meter(id="meter", paused=self.settings.frozen)
        self.status = StatusBar(id="status")
        with Horizontal(id="main"):
            with Vertical(id="chat-pane"):
                yield self.chat
                yield self.input
            with Vertical(id="side"):
                yield self.inspector
                yield self.meter
        yield self.status
        yield Footer(id="footer")

    async def on_mount(self) -> None:
        if self.settings.frozen:
            self.input.cursor_blink = False
        self._open_store()
        self.recorder.configure(system=self.conversation.system, params=self.params.to_json())
        if self.settings.resume:
            await self._resume(self.settings.resume)
        self.input.focus()
        self._install_signal_handlers()
        self.status.set(model=self.models.slots[0].label, state="starting")
        self.load_slot(0)

    def _open_store(self) -> None:
        try:
            self.recorder = Recorder(Store(self.settings.store_path))
        except LlmTuiError as err:
            self.notify(f"conversations will not be saved: {err}", severity="warning", markup=False)

    def _install_signal_handlers(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self.hang_up)
            loop.add_signal_handler(signal.SIGTERM, self.hang_up)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            pass  # not the main thread, or no such signal here

    # -- saving on the way out -----------------------------------------------------------------

    def save_on_exit(self) -> None:
        """Keep the partial reply, stop generating, close the database; safe to call twice."""
        self._stop_turn()
        if not self._closed and self.recorder.store is not None:
            self._closed = True
            try:
                self.recorder.store.close()
            except Exception:
                pass

    def on_unmount(self) -> None:
        self.save_on_exit()

    def hang_up(self) -> None:
        """SIGHUP (the SSH session went away) or SIGTERM: save, then leave."""
        self._stop_turn()
        self.exit(return_code=129)

    async def action_quit(self) -> None:
        self._stop_turn()
        self.exit()

    # -- the one place worker errors are handled -----------------------------------------------

    @on(Worker.StateChanged)
    async def worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        worker, err = event.worker, event.worker.error
        if worker.group == "load":
            self.models.loading = None
            if self.models.handle is None:
                self.status.set(model="no model loaded", family="", dtype="", quant="", device="",
                                state="F2 picks a model")
            else:
                self.status.set(state="")
        elif worker.group == "generate" and self.turn is not None:
            turn, self.turn = self.turn, None
            await turn.reply.finish(turn.reply.text, "error", None, "error")
            self._finish_record(turn.message_id, turn.reply.text, "error", None)
            self.status.set(state="")
        elif worker.group == "preview":
            return  # a preview that cannot be built is reported by the preview itself
        line = error_line(err)
        if self.settings.debug:
            import traceback

            self.tracebacks.append("".join(traceback.format_exception(err)))  # printed after exit
        self.notify(line, title=f"{worker.name} failed", severity="error", markup=False, timeout=10)

    # -- panes ---------------------------------------------------------------------------------

    def action_toggle_pane(self, pane: str) -> None:
        if self.screen.has_class("-narrow"):
            self.action_zoom(pane)  # no room beside the chat: show it full screen
            return
        self._hidden ^= {pane}
        self._pane(pane).display = pane not in self._hidden
        if pane == "meter" and not self.settings.frozen:
            self.meter.paused = "meter" in self._hidden  # no sampling while nobody looks
        self.inspector.parent.display = bool({"inspector", "meter"} - self._hidden)

    def _pane(self, name: str):
        return self.inspector if name == "inspector" else self.meter

    def action_zoom(self, pane: str) -> None:
        widget = self._pane(pane)
        if self.screen.maximized is widget:
            self.screen.minimize()
        else:
            widget.display = True
            self.screen.maximized = widget

    def action_inspector_mode(self) -> None:
        self.inspector.cycle_mode()

    def action_memory(self) -> None:
        self.push_screen(MemoryScreen(self.meter.turns, self.profile_rows, profile_label=self.profile_model,
                                      note=self.profiling.note if self.profiling is not None else None))

    # -- help, palette, themes -----------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_keys()))

    def help_keys(self) -> list[tuple[str, str]]:
        rows = []
        for binding in [*PromptInput.BINDINGS, *self.BINDINGS]:
            if binding.id and binding.id.startswith("app.model-"):
                continue
            keys = self._keymap.get(binding.id, binding.key) if binding.id else binding.key
            rows.append((", ".join(self._key_name(k) for k in keys.split(",")), binding.tooltip or binding.description))
        rows.append(("1-9, Alt+1-9", "switch model (1-9 outside the input; F2 then 1-9 anywhere)"))
        rows.append(("Ctrl+P", "command palette: every action, themes"))
        rows.append(("Tab, Shift+Tab", "move between the input, the chat and the panes"))
        rows.append(("Ctrl+Q", "quit"))
        return rows

    def _key_name(self, key: str) -> str:
        key = key.strip()
        if key[:1] == "f" and key[1:].isdigit():
            return key.upper()
        return self.get_key_display(Binding(key, ""))

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in _PANE_ACTIONS and len(self.screen_stack) > 1:
            return False  # priority keys: leave them to the dialog on top
        return True

    def palette_commands(self) -> list[PaletteCommand]:
        run = self.run_action
        items = [
            PaletteCommand("Models: pick a model", "open the model picker (F2)", partial(run, "models")),
            *[PaletteCommand(f"Models: switch to {n + 1}. {s.label}", str(s.spec.source or "the default model"),
                             partial(self.load_slot, n)) for n, s in enumerate(self.models.slots)],
            PaletteCommand("Conversation: new", "start a new conversation (Ctrl+N)", partial(run, "new_conversation")),
            PaletteCommand("Conversation: clear", "remove every message (Ctrl+L)", partial(run, "clear")),
            PaletteCommand("Conversation: regenerate the last reply", "Ctrl+R", partial(run, "regenerate")),
            PaletteCommand("Conversation: edit the last message", "Ctrl+O", partial(run, "edit_last")),
            PaletteCommand("Conversation: stop generating", "Esc", partial(run, "stop")),
            PaletteCommand("Conversation: export Markdown and JSON", "/save (Ctrl+S)", partial(run, "save")),
            PaletteCommand("Conversation: saved conversations", "F3", partial(run, "sessions")),
            PaletteCommand("Conversation: edit the system prompt", "/system",
                           partial(self._command_system, "")),
            PaletteCommand("Copy: the last reply", "OSC 52 clipboard (y)", partial(run, "copy_reply")),
            PaletteCommand("Copy: the last code block", "OSC 52 clipboard (c)", partial(run, "copy_code")),
            PaletteCommand("Panes: show or hide the inspector", "F5", partial(run, "toggle_pane('inspector')")),
            PaletteCommand("Panes: show or hide the meter", "F6", partial(run, "toggle_pane('meter')")),
            PaletteCommand("Panes: zoom the inspector", "F7", partial(run, "zoom('inspector')")),
            PaletteCommand("Panes: zoom the meter", "F8", partial(run, "zoom('meter')")),
            PaletteCommand("Panes: inspector view (text, pieces, ids)", "F4", partial(run, "inspector_mode")),
            PaletteCommand("Panes: memory plot", "F9", partial(run, "memory")),
            PaletteCommand("Memory: run a profile", "/profile (F9 shows it; Esc there stops it)",
                           self._palette_profile),
            PaletteCommand("Help: keys and commands", "F1", partial(run, "help")),
        ]
        return items

    def watch_theme(self, theme: str) -> None:
        if self.is_running and not self.settings.frozen and self.config is not None:
            try:
                save_default("theme", theme)
            except Exception:
                pass  # a theme that cannot be saved still applies

"""LlmTuiApp: the main screen, its keys and panes, and the wiring between the pieces.

The app owns no model logic. It builds the widgets and the controllers —
``ModelRegistry`` (slots, loading, switching), ``Turns`` (the conversation
and its turns), ``PromptPreview``, ``Sessions`` and ``Profiles`` — connects
them with explicit hooks, and routes the typed messages of ``messages.py``
to the one piece that owns each. Worker errors become one notification line
in one place: ``worker_state_changed``.
"""

from __future__ import annotations

import asyncio
import signal
import traceback
from typing import Iterable

from textual import on
from textual.actions import SkipAction
from textual.app import App, SystemCommand
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from backends.core.errors import UsageError, error_line
from backends.core.params import SamplingParams
from backends.storage.config_edit import save_default

from . import commands
from .controllers.branches import Branches
from .controllers.compare import Comparing
from .controllers.copying import copy_code, copy_reply
from .controllers.output_side import OutputSide
from .controllers.preview import PromptPreview
from .controllers.profiles import Profiles
from .controllers.registry import ModelRegistry
from .controllers.sessions import Sessions
from .controllers.slash import SlashCommands
from .controllers.tools import ToolBox
from .controllers.turns import Turns
from .key_help import help_sections, key_label
from .keys import APP_BINDINGS, PALETTE_TITLES
from .messages import (
    CompareEnded,
    ComparedPrompt,
    ComparedReplyDone,
    CompareProgress,
    ConversationChanged,
    ConversationLoaded,
    DatabaseDamaged,
    LoadProgress,
    ModelReady,
    NeedsConsent,
    PreviewReady,
    ProfileDone,
    ProfileProgress,
    ProfileRequested,
    ProfileStopRequested,
    StoreOpened,
    ToolCallFinished,
    ToolsStarted,
    TurnDone,
    TurnStarted,
    TurnWontFit,
)
from .screens.help import HelpScreen
from .screens.main import MainScreen
from .session import Recorder
from .settings import AppSettings, spec_for
from .widgets.chat import ChatLog
from .widgets.inspector import Inspector
from .widgets.meter import Meter
from .widgets.prompt_input import PromptInput
from .widgets.status import StatusBar
from .widgets.token_view import legend

_PANE_ACTIONS = {"inspector_mode", "toggle_pane", "zoom", "memory"}


class LlmTuiApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "llm-tui"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = APP_BINDINGS
    #: False where the caller catches SIGTERM and SIGHUP itself (launch.py, for a real terminal).
    handle_signals = True

    def __init__(self, settings: AppSettings | None = None, *, config=None, handles: dict | None = None) -> None:
        super().__init__()
        self.settings = settings = settings or AppSettings()
        self.config = config
        defaults = getattr(config, "defaults", None)
        self.tracebacks: list[str] = []  # with --debug, worker errors in full (printed after exit)
        self._saved = False
        self._hidden: set[str] = set()

        self.chat = ChatLog(id="chat")
        self.input = PromptInput(id="input", completion_sources=self._completion_sources)
        self.inspector = Inspector(id="inspector")
        self.meter = Meter(id="meter", paused=settings.frozen)
        self.status = StatusBar(id="status")

        self.recorder = Recorder(None)
        self.models = ModelRegistry(self, settings, config, self.status, self.chat)
        default_name = getattr(defaults, "model", None) or "default"
        for name in settings.models or [None]:
            self.models.add(name or default_name, spec_for(name, settings.options, config))
        for index, handle in (handles or {}).items():  # models loaded elsewhere (tests, benchmarks)
            self.models.slots[index].handle = handle
        params = config.sampling_params() if config is not None else SamplingParams()
        self.turns = Turns(self, self.models, self.recorder, chat=self.chat, prompt_input=self.input,
                           status=self.status, inspector=self.inspector, meter=self.meter, params=params,
                           system=settings.system or getattr(defaults, "system", None))
        self.preview = PromptPreview(self, self.models, self.turns, prompt_input=self.input,
                                     inspector=self.inspector, status=self.status)
        self.sessions = Sessions(self, self.recorder, self.turns, chat=self.chat, status=self.status)
        self.recorder.on_damaged = lambda err: self.post_message(DatabaseDamaged(err))  # from any thread
        self.profiles = Profiles(self, self.models, self.turns, chat=self.chat, status=self.status, meter=self.meter)
        self.branches = Branches(self, self.turns, self.recorder, chat=self.chat)
        self.legend = Static(legend(), id="token-legend")
        self.legend.display = False
        self.output = OutputSide(self, chat=self.chat, inspector=self.inspector, line=self.legend,
                                 status=self.status, models=self.models)
        self.comparing = Comparing(self, self.models, self.turns, self.recorder, chat=self.chat, status=self.status,
                                   inspector=self.inspector)
        self.tools = ToolBox(self, self.models, self.turns, self.recorder, chat=self.chat, status=self.status,
                             config=config)
        self.turns.tools_for = self.tools.tools_for
        self.turns.after_reply = self.tools.after_reply
        self.turns.on_fresh = self.tools.fresh_conversation
        self.preview.tools_for = self.tools.tools_for
        self.comparing.tools_on = lambda: any(o.on for o in self.tools.offered.values())
        self.preview.compared = self.comparing.targets
        self.turns.answer_again = self._answer_again
        self.models.on_compare_pick = self.comparing.add
        self.preview.paused = lambda: self.comparing.running is not None
        self.slash = SlashCommands(self, self.turns, self.models, self.sessions, self.profiles, chat=self.chat,
                                   prompt_input=self.input, comparing=self.comparing, tools=self.tools)
        # The hooks between them: a profile holds the model like a turn does.
        self.turns.gate = lambda: (self.sessions.refuse_turns(), self.profiles.refuse_turns(),
                                   self.comparing.refuse_turns(), self.tools.refuse_turns())
        self.models.before_switch = self._release_model
        self.models.on_activated = self._model_activated
        self.models.on_gave_up = lambda: (self.turns.drop_waiting(), self.comparing.load_failed())

        if config is not None and not settings.frozen:
            if getattr(defaults, "theme", None) and defaults.theme in self.available_themes:
                self.theme = defaults.theme
            if config.keys:
                self.set_keymap(config.keys)

    # -- layout and start ----------------------------------------------------------------------

    def get_default_screen(self) -> MainScreen:
        return MainScreen(self.input)

    def compose(self):
        with Horizontal(id="main"):
            with Vertical(id="chat-pane"):
                yield self.chat
                yield self.legend
                yield self.input
            with Vertical(id="side"):
                yield self.inspector
                yield self.meter
        yield self.status
        yield Footer(id="footer")

    async def on_mount(self) -> None:
        if self.settings.frozen:
            self.input.cursor_blink = False
        self.recorder.configure(system=self.turns.conversation.system, params=self.turns.params.to_json())
        self.sessions.open_store(self.settings.store_path, self.settings.resume)  # a worker: StoreOpened
        self.input.focus()
        self._install_signal_handlers()
        self.status.set(model=self.models.slots[0].label, load="starting")
        self.models.load(0)
        self.tools.start(self.settings.tools_file, list(self.settings.mcp))

    def _install_signal_handlers(self) -> None:
        if not self.handle_signals:
            return
        try:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self.hang_up, 128 + signal.SIGHUP)
            loop.add_signal_handler(signal.SIGTERM, self.hang_up, 128 + signal.SIGTERM)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            pass  # not the main thread, or no such signal here

    # -- the wiring between the pieces ---------------------------------------------------------

    def _release_model(self):
        """Before another model becomes active: stop the profile and the turn that use this one."""
        if self.profiles.running is not None and self.models.loading is None:
            self.profiles.stop()
        busy = self.turns.release_for_switch()
        self.turns.release_cache()  # the next model reads the conversation anew
        return busy

    async def _answer_again(self) -> None:
        """Ctrl+R: the active model answers the conversation again, or in compare mode every compared one."""
        if not self.comparing.on:
            await self.turns.generate()
            return
        try:
            await self.comparing.answer()
        except UsageError as err:
            self.chat.add_notice(str(err), error=True)

    def _model_activated(self, slot) -> None:
        info = slot.handle.info
        self.recorder.configure(model=info.label, meta={"spec": slot.spec.to_json(), "family": info.family,
                                                        "dtype": info.dtype, "quantization": info.quant,
                                                        "device": info.device})
        self.profiles.model_activated(slot.handle)
        read = getattr(slot.handle.runner, "metrics", None)  # a server reports its own load
        self.meter.watch_server(f"{info.device} at {info.path}" if read else None, read)
        self.preview.schedule(now=True)
        self.turns.show_kept()
        self.call_later(self.turns.answer_waiting)
        self.comparing.model_ready()
        self.tools.pick_up()

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        try:
            parsed = commands.parse(event.text)
            if parsed is not None:
                if not await self.slash.run(parsed):
                    self.input.accept()
                return
            self.turns.check_can_send(while_loading=True)
        except UsageError as err:
            self.chat.add_notice(str(err), error=True)  # the input keeps the text to fix
            return
        if self.comparing.on:
            try:
                await self.comparing.send(commands.literal(event.text))
            except UsageError as err:
                self.chat.add_notice(str(err), error=True)
                return
            self.input.accept()
            return
        self.input.accept()
        if self.models.handle is None:  # the model is still loading
            self.turns.queue(commands.literal(event.text))
        else:
            await self.turns.send(commands.literal(event.text))

    def on_prompt_input_completions(self, message: PromptInput.Completions) -> None:
        self.notify("  ".join(message.options), title="Tab completes", markup=False, timeout=4)

    def _completion_sources(self) -> dict:
        return {"models": self.models.names(), "themes": sorted(self.available_themes)}

    def on_text_area_changed(self) -> None:
        self.preview.schedule()

    def on_conversation_changed(self, message: ConversationChanged) -> None:
        self.preview.schedule(now=message.now)

    # -- the output side: token colours, the token cursor, branches, the prompt's score -------------

    def action_colour_tokens(self) -> None:
        self.output.toggle_colour()

    def on_chat_log_token_focused(self, message: ChatLog.TokenFocused) -> None:
        self.output.focused(message.reply, message.index)

    def on_chat_log_tokens_left(self) -> None:
        self.output.left()

    async def on_chat_log_alternative_chosen(self, message: ChatLog.AlternativeChosen) -> None:
        await self.branches.take_alternative(message.reply, message.index, message.rank)

    async def on_chat_log_branch_step(self, message: ChatLog.BranchStep) -> None:
        await self.branches.step(message.reply, message.step)

    def on_chat_log_keep_chosen(self, message: ChatLog.KeepChosen) -> None:
        try:
            self.comparing.keep_reply(message.reply)
        except UsageError as err:
            self.chat.add_notice(str(err), error=True)

    def action_colour_divergence(self) -> None:
        self.output.toggle_divergence()

    async def on_compared_reply_done(self, message: ComparedReplyDone) -> None:
        await self.comparing.reply_done(message)

    def on_compared_prompt(self, message: ComparedPrompt) -> None:
        self.comparing.prompt(message)

    def on_compare_progress(self, message: CompareProgress) -> None:
        self.comparing.progress(message)

    async def on_compare_ended(self, message: CompareEnded) -> None:
        await self.comparing.ended(message)

    def on_inspector_score_requested(self, message: Inspector.ScoreRequested) -> None:
        self.output.score(message.view)

    def on_tools_started(self, message: ToolsStarted) -> None:
        self.tools.started(message)
        self.tools.pick_up()

    async def on_tool_call_finished(self, message: ToolCallFinished) -> None:
        await self.tools.finished(message)

    def on_database_damaged(self, message: DatabaseDamaged) -> None:
        self.sessions.damaged(message.error)

    def on_store_opened(self, message: StoreOpened) -> None:
        self.sessions.opened(message)

    async def on_conversation_loaded(self, message: ConversationLoaded) -> None:
        await self.sessions.loaded(message)
        self.tools.pick_up()

    def on_preview_ready(self, message: PreviewReady) -> None:
        self.preview.ready(message)

    async def on_turn_done(self, message: TurnDone) -> None:
        await self.turns.turn_done(message)

    def on_turn_started(self, message: TurnStarted) -> None:
        self.turns.started(message)

    async def on_turn_wont_fit(self, message: TurnWontFit) -> None:
        await self.turns.wont_fit(message)

    def on_load_progress(self, message: LoadProgress) -> None:
        self.models.progress(message)

    def on_model_ready(self, message: ModelReady) -> None:
        self.models.ready(message)

    def on_needs_consent(self, message: NeedsConsent) -> None:
        self.models.needs_consent(message)

    async def on_profile_progress(self, message: ProfileProgress) -> None:
        await self.profiles.progress(message)

    async def on_profile_done(self, message: ProfileDone) -> None:
        await self.profiles.done(message)

    def on_profile_requested(self, message: ProfileRequested) -> None:
        self.profiles.start_or_say_why(message.lengths)

    def on_profile_stop_requested(self, message: ProfileStopRequested) -> None:
        self.profiles.stop()

    @on(Worker.StateChanged)
    async def worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place a worker's error is reported: one line, the rest with --debug."""
        if event.state != WorkerState.ERROR:
            return
        worker, err = event.worker, event.worker.error
        if worker.group == "preview":
            return  # a preview that cannot be built is reported by the preview itself
        if worker.group == "load":
            self.models.load_failed()
        elif worker.group == "generate":
            await self.turns.generation_failed()
        if self.settings.debug:
            self.tracebacks.append("".join(traceback.format_exception(err)))
        self.notify(error_line(err), title=f"{worker.name} failed", severity="error", markup=False, timeout=10)

    # -- saving on the way out -----------------------------------------------------------------

    def save_on_exit(self) -> None:
        """Keep the partial reply, stop generating and profiling, close the database; safe to call twice."""
        self.turns.abandon()
        self.profiles.stop()
        self.comparing.abandon()  # a compared turn's threads end at their next token; what they said is saved
        self.tools.close()
        if not self._saved:
            self._saved = True
            try:
                self.recorder.close()
            except Exception:
                pass

    def on_unmount(self) -> None:
        self.save_on_exit()

    def hang_up(self, code: int) -> None:
        """SIGHUP (the SSH session went away: 129) or SIGTERM (143): save, then leave."""
        self.turns.abandon()
        self.comparing.abandon()
        self.exit(return_code=code)

    async def action_quit(self) -> None:
        self.turns.abandon()
        self.comparing.abandon()
        self.exit()

    # -- actions the keys name (keys.py) -------------------------------------------------------

    def action_stop(self) -> None:
        if self.turns.stop() or self.comparing.stop() or self.tools.stop():
            return
        if self.focused is self.input:
            self.chat.focus()  # leave the input so 1-9, ?, y and c work as keys
        else:
            raise SkipAction()

    async def action_regenerate(self) -> None:
        await self.turns.regenerate()

    async def action_edit_last(self) -> None:
        await self.turns.edit_last()

    async def action_clear(self) -> None:
        await self.turns.clear()

    async def action_new_conversation(self) -> None:
        await self.turns.new_conversation()

    def action_save(self) -> None:
        try:
            self.sessions.export()
        except UsageError as err:
            self.chat.add_notice(str(err), error=True)

    def action_copy_reply(self) -> None:
        copy_reply(self, self.chat)

    def action_copy_code(self) -> None:
        copy_code(self, self.chat)

    def action_models(self) -> None:
        self.models.open_picker()

    def action_switch_model(self, number: int) -> None:
        self.models.switch_number(number)

    def action_sessions(self) -> None:
        self.sessions.open_screen()

    def action_memory(self) -> None:
        self.push_screen(self.profiles.screen())

    def action_profile(self) -> None:
        self.profiles.start_or_say_why("")

    def action_system(self) -> None:
        self.slash.system("")

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_sections(self)))

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

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in _PANE_ACTIONS and len(self.screen_stack) > 1:
            return False  # priority keys: leave them to the dialog on top
        return True

    # -- help and the command palette: both read the bindings, so remapped keys show -----------

    def get_system_commands(self, screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            title = PALETTE_TITLES.get(binding.id)
            if title is not None:
                yield SystemCommand(title, f"{key_label(self, binding)} · {binding.tooltip}",
                                    lambda action=binding.action: self.run_action(action))
        for n, slot in enumerate(self.models.slots):
            yield SystemCommand(f"Models: switch to {n + 1}. {slot.label}",
                                str(slot.spec.source or "the embedded default model"),
                                lambda index=n: self.models.load(index))
        yield SystemCommand("Conversation: edit the system prompt", "/system", self.action_system)
        yield SystemCommand("Memory: run a profile", "/profile (F9 shows it; Esc there stops it)",
                            self.action_profile)

    def watch_theme(self, theme: str) -> None:
        if self.is_running and not self.settings.frozen and self.config is not None:
            try:
                save_default("theme", theme)
            except Exception:
                pass  # a theme that cannot be saved still applies

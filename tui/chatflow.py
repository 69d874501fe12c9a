"""Turns of the conversation: sending, streaming into the chat, stopping, regenerating, editing.

A mixin of ``LlmTuiApp``. Generation runs in a thread worker that posts
``TokensArrived`` batches and one ``TurnDone`` (see ``worker.py``); the
handlers here only put text on screen and save it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from functools import partial

from textual.actions import SkipAction

from backends.core.errors import UsageError
from backends.core.params import SamplingParams
from backends.core.paths import data_dir
from backends.core.sanitize import visible_text
from backends.core.units import format_bytes
from backends.memory.fit import plan_turn
from backends.memory.turn import context_projection
from backends.prompt.truncation import truncation_rule

from . import commands
from .screens.fit import FitScreen
from .widgets.chat import Reply, UserMessage, last_code_block
from .widgets.prompt_input import PromptInput
from .worker import Pace, TokensArrived, TurnDone, TurnWontFit, pump_generation

_STATUS_OF = {"eos": "complete", "length": "complete", "stopped": "stopped", "error": "error"}


@dataclass
class Turn:
    """The reply being generated."""

    index: int
    reply: Reply
    message_id: int | None
    stop_event: threading.Event
    started: float
    finished: threading.Event  # set when the generation thread is over
    pace: Pace  # how often the worker sends text: as often as the chat can draw it cheaply
    check_memory: bool = True  # False once the user chose to send a turn that may not fit


@dataclass(frozen=True)
class TurnTiming:
    """When a turn's last token came and when its reply was fully on screen (perf_counter)."""

    turn: int
    last_token_t: float | None
    displayed_t: float
    done: object


class ChatFlow:
    """Sending and answering; slash commands."""

    # -- sending -------------------------------------------------------------------------------

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        try:
            parsed = commands.parse(event.text)
            if parsed is not None:
                keep = await self.run_command(parsed)
                if not keep:
                    self.input.accept()
                return
            self.check_can_send()
        except UsageError as err:
            self.chat.add_notice(str(err), error=True)  # the input keeps the text to fix
            return
        self.input.accept()
        await self.send(commands.literal(event.text))

    def check_can_send(self) -> None:
        if self.turn is not None:
            raise UsageError("a reply is still being generated", "press Esc to stop it")
        if getattr(self, "profiling", None) is not None:
            raise UsageError("a memory profile is running",
                             "wait for it, or press Esc in the memory screen (F9) to stop it")
        if self.models.handle is None:
            state = "is still loading" if self.models.loading is not None else "is not loaded"
            raise UsageError(f"the model {state}", "wait for it, or press F2 to pick another")

    async def send(self, text: str) -> None:
        self.conversation.add_user(text)
        self.chat.add_user(text)
        self._record("user", text)
        await self.generate()

    async def generate(self, *, check_memory: bool = True) -> None:
        """Answer the conversation as it stands with the active model."""
        slot = self.models.current
        handle = slot.handle
        reply = await self.chat.add_reply(slot.label)
        self.turn_count += 1
        turn = Turn(self.turn_count, reply, self._record("assistant", "", status="partial", model=slot.label),
                    threading.Event(), time.perf_counter(), threading.Event(), Pace(), check_memory)
        self.turn = turn
        self.status.set(state="generating", ttft_s=None, tok_s=None)
        self.run_worker(partial(self._generate_work, turn, handle, self.conversation.copy_messages(), self.params),
                        name="generate", group="generate", thread=True, exit_on_error=False)

    def _generate_work(self, turn: Turn, handle, messages: list[dict], params: SamplingParams):
        try:
            if turn.check_memory:
                fit = self._check_memory(handle, messages, params)
                if fit is not None:
                    self.post_message(TurnWontFit(turn.index, fit))
                    return None
            generation = handle.stream(messages, params, stop_event=turn.stop_event)
            result = pump_generation(generation, self.post_message, turn.index,
                                     checkpoint=partial(self.recorder.checkpoint, turn.message_id),
                                     view=generation.view, pace=turn.pace)
            generation.join(5)
            return result
        finally:
            turn.finished.set()

    def _check_memory(self, handle, messages: list[dict], params: SamplingParams):
        """Before a turn (in the worker): a TurnFit when it would not fit in free memory, else None.

        A turn close to the limit gets a warning and goes ahead.
        """

        try:
            fit = plan_turn(handle, messages, params)
        except Exception:  # an estimate must never stop a turn
            return None
        if fit.verdict.level == "warn":
            self.call_from_thread(self.notify, fit.verdict.line, severity="warning", timeout=12, markup=False)
        return None if fit.fits else fit

    async def on_turn_wont_fit(self, message: TurnWontFit) -> None:
        """Nothing was generated: take the empty reply away and ask what to do."""
        turn = self.turn
        if turn is None or message.turn != turn.index:
            return
        self.turn = None
        self.turn_count -= 1  # nothing ran: the next turn takes its number
        await self.chat.remove_from_last(Reply)
        self._finish_record(turn.message_id, "", "stopped", None)
        self.status.set(state="")

        self.push_screen(FitScreen(message.fit), partial(self._fit_answered, message.fit))

    async def _fit_answered(self, fit, choice: str | None) -> None:
        if choice == "truncate":
            self.params = replace(self.params, max_prompt_tokens=fit.budget)
            self.recorder.configure(params=self.params.to_json())
            self.status.set(budget=fit.budget)
            self.chat.add_notice(f"each prompt is kept within {fit.budget:,} tokens by {fit.rule}; "
                                 "/budget off removes the limit")
            await self.generate()
        elif choice == "send":
            await self.generate(check_memory=False)
        else:
            await self._unsend()

    async def _unsend(self) -> None:
        """Cancelled: the unanswered message goes back to the input (unless something is typed there)."""
        if self.input.text.strip():
            self.chat.add_notice("not sent; Ctrl+R sends it, /budget N keeps prompts within N tokens")
            return
        await self._take_back_last_message()

    def _command_budget(self, arg: str) -> None:
        if not arg:
            value = self.params.max_prompt_tokens
            self.chat.add_notice(f"prompt budget: {value:,} tokens" if value else
                                 "no prompt budget: the whole conversation is sent (the family's own rules apply)")
            return
        self.params = self.params.with_value("max_prompt_tokens", arg)
        self.recorder.configure(params=self.params.to_json())
        self.status.set(budget=self.params.max_prompt_tokens)
        value = self.params.max_prompt_tokens
        rule = truncation_rule(self.models.handle.family) if self.models.handle is not None else "truncation"
        self.chat.add_notice(f"each prompt is kept within {value:,} tokens by {rule}" if value
                             else "prompt budget removed")
        self.schedule_preview(now=True)

    def _context_projection(self, context_tokens: int) -> str:
        handle = self.models.handle
        try:
            projection = context_projection(handle, context_tokens)
        except Exception:
            return ""
        text = f"KV {format_bytes(projection.kv_bytes)}"
        if projection.tokens_that_fit is not None:
            text += f" · ~{projection.tokens_that_fit:,} more tok fit"
        return text

    async def on_tokens_arrived(self, message: TokensArrived) -> None:
        turn = self.turn
        if turn is None or message.turn != turn.index:
            return
        if await turn.reply.write(message.text, message.n_tokens):
            self.status.set(state=f"generating · {turn.reply.n_tokens} tokens")
        turn.pace.interval = turn.reply.flush_interval

    async def on_turn_done(self, message: TurnDone) -> None:
        turn = self.turn
        if turn is None or message.turn != turn.index:
            return
        done = message.done
        text = done.text or turn.reply.text
        status = _STATUS_OF.get(done.stop_reason, "complete")
        stats = {**done.stats.to_json(), "stop_reason": done.stop_reason}
        await turn.reply.finish(text, status, stats, done.stop_reason)
        self.timings.append(TurnTiming(turn.index, message.last_token_t, time.perf_counter(), done))
        self.turn = None
        if text:
            self.conversation.add_assistant(text)
        self._finish_record(turn.message_id, text, status, done)
        if done.error:
            self.chat.add_notice(done.error, error=True)
        s = done.stats
        context = s.prompt_tokens + s.new_tokens
        self.status.set(state="", ttft_s=s.ttft_s, tok_s=s.decode_tok_s, context_used=context,
                        kv=self._context_projection(context))
        if message.view is not None and message.view.captured is not None:
            self.inspector.show_captured(message.view)
        self.meter.log_turn(turn.index, context)

    # -- conversation actions ------------------------------------------------------------------

    def action_stop(self) -> None:
        if self.turn is not None:
            self.turn.stop_event.set()
            self.status.set(state="stopping…")
        elif self.focused is self.input:
            self.chat.focus()  # leave the input so 1-9, ?, y and c work as keys
        else:
            raise SkipAction()

    async def action_regenerate(self) -> None:
        try:
            self.check_can_send()
            if self.conversation.pop_last_reply() is not None:
                await self.chat.remove_from_last(Reply)
            if not self.conversation.messages or self.conversation.messages[-1]["role"] != "user":
                raise UsageError("there is no message to answer", "type one first")
        except UsageError as err:
            self.chat.add_notice(str(err), error=True)
            return
        self.recorder.truncate(self._stored_count())
        await self.generate()

    async def action_edit_last(self) -> None:
        if self.turn is not None:
            self.chat.add_notice("a reply is still being generated — press Esc to stop it first", error=True)
            return
        if not await self._take_back_last_message():
            self.chat.add_notice("there is no message to edit", error=True)

    async def _take_back_last_message(self) -> bool:
        """Move the last user message (and what follows it) from the chat into the input."""
        text = self.conversation.pop_last_user()
        if text is None:
            return False
        await self.chat.remove_from_last(UserMessage)
        self.recorder.truncate(self._stored_count())
        self.input.load_text(text)
        self.input.move_cursor(self.input.document.end)
        self.input.focus()
        self.schedule_preview()
        return True

    async def action_clear(self) -> None:
        self._stop_turn()
        self.conversation.clear()
        await self.chat.clear()
        self.recorder.truncate(0)
        self.chat.add_notice("conversation cleared")
        self.schedule_preview(now=True)

    async def action_new_conversation(self) -> None:
        self._stop_turn()
        self.recorder.new()
        self.conversation.clear()
        await self.chat.clear()
        self.chat.add_notice("new conversation")
        self.schedule_preview(now=True)

    def _stop_turn(self) -> None:
        if self.turn is not None:
            turn, self.turn = self.turn, None
            turn.stop_event.set()
            self._finish_record(turn.message_id, turn.reply.text, "stopped", None)

    def action_copy_reply(self) -> None:
        reply = self.chat.last_reply()
        if reply is None or not reply.text:
            self.notify("there is no reply to copy yet", severity="warning", markup=False)
            return
        self.copy_to_clipboard(visible_text(reply.text))
        self.notify(f"copied the last reply ({len(reply.text):,} characters)", markup=False)

    def action_copy_code(self) -> None:
        reply = self.chat.last_reply()
        code = last_code_block(reply.text) if reply is not None else None
        if code is None:
            self.notify("the last reply has no code block", severity="warning", markup=False)
            return
        self.copy_to_clipboard(visible_text(code))
        self.notify(f"copied a code block ({len(code.splitlines())} lines)", markup=False)

    def action_save(self) -> None:
        self._export(("md", "json"), None)

    def _export(self, formats: tuple[str, ...], path: str | None) -> None:
        written = self.recorder.export(formats, path, data_dir() / "exports")
        if not written:
            raise UsageError("there is nothing to save yet", "send a message first")
        self.chat.add_notice("saved " + ", ".join(str(p) for p in written))

    # -- slash commands ------------------------------------------------------------------------

    async def run_command(self, parsed: commands.Parsed) -> bool:
        """Run a slash command; True keeps the input's text (it was put there to edit)."""
        name, arg = parsed.name, parsed.arg
        if name == "clear":
            await self.action_clear()
        elif name == "new":
            await self.action_new_conversation()
        elif name == "system":
            return self._command_system(arg)
        elif name in ("set", "seed"):
            key, value = commands.parse_set(arg) if name == "set" else ("seed", arg or "")
            if name == "seed" and not value:
                raise UsageError("/seed needs a number", "for example: /seed 42 (or /seed none)")
            self.params = self.params.with_value(key, value)
            self.recorder.configure(params=self.params.to_json())
            self.status.set(budget=self.params.max_prompt_tokens)
            self.chat.add_notice(f"{key} = {getattr(self.params, key)}")
        elif name == "params":
            self.chat.add_notice(", ".join(f"{k}={v}" for k, v in self.params.to_json().items()))
        elif name == "model":
            if not arg:
                raise UsageError("/model needs a name or number", "for example: /model 2 — or press F2")
            self.switch_to(*commands.parse_model(arg))
        elif name == "models":
            self.action_models()
        elif name == "regen":
            await self.action_regenerate()
        elif name == "edit":
            await self.action_edit_last()
            return True
        elif name == "stop":
            if self.turn is None:
                raise UsageError("nothing is being generated")
            self.action_stop()
        elif name == "copy":
            self.action_copy_code() if arg == "code" else self.action_copy_reply()
        elif name == "save":
            self._export(*commands.parse_save(arg))
        elif name == "sessions":
            self.action_sessions()
        elif name == "budget":
            self._command_budget(arg)
        elif name == "profile":
            self.start_profile(arg)
        elif name == "theme":
            if arg not in self.available_themes:
                raise UsageError(f"there is no theme '{arg}'", "Tab completes the names; or Ctrl+P → Theme")
            self.theme = arg
        elif name == "help":
            self.action_help()
        elif name == "quit":
            await self.action_quit()
        return False

    def _command_system(self, arg: str) -> bool:
        if not arg:
            self.input.load_text("/system " + (self.conversation.system or ""))
            self.input.move_cursor(self.input.document.end)
            return True
        text = None if arg.lower() == "none" else arg
        self.conversation.set_system(text)
        self.recorder.configure(system=text)
        self.chat.add_notice("system prompt removed" if text is None else "system prompt set")
        self.schedule_preview(now=True)
        return False

    def _completion_sources(self) -> dict:
        names = [str(n + 1) for n in range(len(self.models.slots))] + [s.name for s in self.models.slots]
        return {"models": names, "themes": sorted(self.available_themes)}

    def on_prompt_input_completions(self, message: PromptInput.Completions) -> None:
        self.notify("  ".join(message.options), title="Tab completes", markup=False, timeout=4)

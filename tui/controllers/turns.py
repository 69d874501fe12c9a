"""Turns of the conversation: sending, streaming into the chat, stopping, regenerating, editing.

``Turns`` owns the conversation, the sampling parameters and the turn being
generated. Generation runs in a thread worker (``pump.pump_generation``) that
posts ``TokensArrived`` batches straight to the reply widget and then one
``TurnDone`` to it, which bubbles to the app (so it comes after every batch)
and is routed here to finish and save the turn. What the reply says is the
backend's: ``TurnDone`` carries the whole text.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable

from backends.core.conversation import Conversation
from backends.core.errors import UsageError, error_line
from backends.core.events import DoneEvent
from backends.core.params import SamplingParams
from backends.core.units import format_bytes
from backends.memory.fit import TurnFit, plan_turn
from backends.memory.turn import context_projection
from backends.prompt.check import PromptCheck
from backends.prompt.truncation import truncation_rule

from ..messages import ConversationChanged, TurnDone, TurnStarted, TurnWontFit
from ..pump import pump_generation
from ..screens.fit import FitScreen
from ..session import Recorder, reply_stats, reply_status
from ..widgets.chat import Saved
from ..widgets.reply import Reply, UserMessage
from .registry import ModelRegistry



@dataclass(frozen=True)
class Replaced:
    """The reply a branch takes the place of, as it was: it stays untouched, in the database and
    in the conversation, until the branch has words of its own, and comes back if it never does."""

    message_id: int | None
    model: str
    made_by: str | None
    text: str
    status: str | None
    stats: dict | None
    tokens: list
    branch: tuple[int, int] | None

    @classmethod
    def of(cls, reply: Reply) -> "Replaced":
        stats = dict(reply.stats or {})
        return cls(reply.message_id, reply.model, reply.made_by, reply.text, reply.status, stats,
                   list(reply.tokens), reply.branch)


@dataclass(frozen=True)
class TurnRequest:
    """What a turn answers beyond the conversation: a branch goes on from ``prefix`` (a reply's first
    tokens and an alternative) in place of the reply ``replaces``; ``notice`` is said as it starts."""

    prefix: list | None = None
    replaces: Replaced | None = None
    branch: tuple[int, int] | None = None
    notice: str | None = None


@dataclass
class Turn:
    """The reply being generated."""

    index: int
    reply: Reply
    message_id: int | None
    stop_event: threading.Event
    started: float
    finished: threading.Event  # set when the generation thread is over
    check_memory: bool = True  # False once the user chose to send a turn that may not fit
    request: TurnRequest = TurnRequest()
    #: A branch: set once the reply it replaces was kept among the turn's branches (from the
    #: first words on; the worker's checkpoint and the UI's end may race for it, hence the lock).
    branch_saved: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def made_by(handle) -> str:
    """Whose token IDs a reply holds: a branch goes on from them, and they mean the same only to
    the model, weights and engine that made them."""
    info = handle.info
    return f"{info.label} · {type(handle.runner).__name__} · {info.path}"


def compared_saved(message, model: str | None) -> Saved:
    """A compared turn as saved (the kept reply in place, the others its branches), panes in their order."""
    replies = sorted([message, *message.branches], key=lambda r: (r.stats or {}).get("compare", {}).get("pane", 0))
    return Saved("compared", message.content, message.model or model or "", {
        "labels": [r.model or model or "" for r in replies], "kept": replies.index(message), "message_id": message.id,
        "replies": [{"text": r.content, "status": r.status, "stats": r.stats, "tokens": r.tokens} for r in replies]})


class Turns:
    """The conversation and its turns."""

    def __init__(self, app, models: ModelRegistry, recorder: Recorder, *, chat, prompt_input, status,
                 inspector, meter, params: SamplingParams, system: str | None) -> None:
        self.app = app
        self.models = models
        self.recorder = recorder
        self.chat = chat
        self.input = prompt_input
        self.status = status
        self.inspector = inspector
        self.meter = meter
        self.params = params
        self.conversation = Conversation()
        self.conversation.set_system(system)
        self.turn: Turn | None = None
        self.waiting = False  # a message was sent while the model loaded: answered once it is ready
        self.turn_count = 0
        #: Raises UsageError when something else holds the model (a memory profile); set by the app.
        self.gate: Callable[[], None] = lambda: None
        #: What answers the conversation again on Ctrl+R instead of the active model (compare mode), or None.
        self.answer_again: Callable | None = None
        #: Tools (set by the app): the schemas a handle is offered this turn (None: none) …
        self.tools_for: Callable = lambda handle, say=False: None
        #: … what looks at each finished reply for calls (and goes on after them) …
        self.after_reply: Callable | None = None
        #: … and what hears that another conversation begins (consent given is forgotten).
        self.on_fresh: Callable[[], None] = lambda: None

    def changed(self, now: bool = True) -> None:
        self.app.post_message(ConversationChanged(now))

    # -- sending -------------------------------------------------------------------------------

    def check_can_send(self, *, while_loading: bool = False) -> None:
        """Raise UsageError when a message cannot be sent now; ``while_loading`` lets one wait
        for a model that is loading."""
        if self.turn is not None:
            raise UsageError("a reply is still being generated", "press Esc to stop it")
        if self.waiting:
            raise UsageError("a message is already waiting for the model to load", "it is sent when it is ready")
        self.gate()
        if self.models.handle is None and not (while_loading and self.models.loading is not None):
            state = "is still loading" if self.models.loading is not None else "is not loaded"
            raise UsageError(f"the model {state}", "wait for it, or press F2 to pick another")

    def queue(self, text: str) -> None:
        """A message sent while the model loads: shown and saved now, answered once it is ready."""
        self.conversation.add_user(text)
        self.chat.add_user(text)
        self.record("user", text)
        self.waiting = True
        label = self.models.slots[self.models.loading].label
        self.chat.add_notice(f"sent to {label} as soon as it has loaded")
        self.status.set(turn="1 message waiting")

    async def answer_waiting(self) -> None:
        """The model is ready: answer the message that waited for it."""
        if self.waiting:
            self.waiting = False
            await self.generate()

    def drop_waiting(self) -> None:
        """The load failed: the message stays in the conversation, unanswered."""
        if self.waiting:
            self.waiting = False
            self.status.set(turn="")
            self.chat.add_notice("the waiting message was not answered: pick a model (F2), then Ctrl+R sends it",
                                 error=True)

    async def send(self, text: str) -> None:
        self.conversation.add_user(text)
        self.chat.add_user(text)
        self.record("user", text)
        await self.generate()

    async def generate(self, *, check_memory: bool = True, request: TurnRequest = TurnRequest()) -> None:
        """Answer the conversation as it stands with the active model; a ``request`` with a
        prefix goes on from a reply's first tokens (a branch) in place of the reply it replaces."""
        slot = self.models.current
        handle = slot.handle
        replaces = request.replaces
        if replaces is not None:  # off the screen and out of the conversation, not yet out of the database
            self.conversation.pop_last_reply()
            await self.chat.remove_from_last(Reply)
        if request.notice:
            self.chat.add_notice(request.notice)
        reply = await self.chat.add_reply(slot.label, branch=request.branch)
        reply.made_by = made_by(handle)
        reply.on_progress = lambda n: self.status.set(turn=f"generating · {n:,} tokens")
        self.turn_count += 1
        if replaces is None:
            message_id = self.record("assistant", "", status="partial", model=slot.label)
        else:
            message_id = replaces.message_id  # written over once the branch has words (_keep_replaced)
        reply.message_id = message_id
        turn = Turn(self.turn_count, reply, message_id, threading.Event(), time.perf_counter(), threading.Event(),
                    check_memory, request)
        self.turn = turn
        self.status.set(turn="generating", ttft_s=None, tok_s=None)
        self.app.run_worker(partial(self._generate_work, turn, handle, self.conversation.copy_messages(),
                                    self.params, self.tools_for(handle, say=True)),
                            name="generate", group="generate", thread=True, exit_on_error=False)

    def _generate_work(self, turn: Turn, handle, messages: list[dict], params: SamplingParams,
                       tools: list[dict] | None = None):
        """In the worker thread: the fit check, then the turn, pumped to the screen."""
        try:
            fit = self._check_fit(handle, messages, params, turn.check_memory, tools)
            if fit is not None:
                self.app.post_message(TurnWontFit(turn.index, fit, turn.request))
                return None
            generation = handle.stream(messages, params, stop_event=turn.stop_event, prefix=turn.request.prefix,
                                       **({"tools": tools} if tools else {}))
            self.app.post_message(TurnStarted(turn.index, generation.view))
            result = pump_generation(generation, turn.reply.post_message, turn.index, pace=turn.reply.pace,
                                     checkpoint=partial(self._checkpoint, turn))
            generation.join(5)
            return result
        finally:
            turn.finished.set()

    def _checkpoint(self, turn: Turn, text: str) -> None:
        """The reply so far, saved from the worker; a branch writes nothing until it has words."""
        if turn.request.replaces is None:
            self.recorder.checkpoint(turn.message_id, text)
        elif text:
            self._keep_replaced(turn)
            self.recorder.checkpoint(turn.message_id, text)

    def _keep_replaced(self, turn: Turn) -> None:
        """A branch has words of its own: keep the reply it replaces among the turn's branches, and
        write the branch in its place. Once, from whichever thread gets there first."""
        if turn.request.replaces is None:
            return
        with turn.lock:
            if not turn.branch_saved:
                turn.branch_saved = True
                self.recorder.keep_as_branch(turn.message_id)
                self.recorder.restart(turn.message_id, turn.reply.model)

    async def _put_back(self, turn: Turn) -> bool:
        """A branch that got no words: the reply it was to replace comes back as it was (the
        database never lost it). False when the turn was no branch."""
        old = turn.request.replaces
        if old is None or turn.branch_saved:
            return False
        self.conversation.add_assistant(old.text)
        reply = await self.chat.add_reply(old.model, old.text, status=old.status or "complete", stats=old.stats,
                                          tokens=old.tokens, message_id=old.message_id, branch=old.branch)
        reply.made_by = old.made_by
        self.chat.add_notice("no branch was made: the reply is as it was", error=True)
        return True

    def _end_record(self, turn: Turn, text: str, status: str, done: DoneEvent | None) -> None:
        """Save how the turn's reply ended; a branch first keeps the reply it replaces."""
        if text or done is not None and done.tool_calls:
            self._keep_replaced(turn)
        elif turn.request.replaces is not None and not turn.branch_saved:
            return  # nothing to write: the replaced reply is still in its row
        self.finish_record(turn.message_id, text, status, done, turn.reply.tokens, turn.reply.made_by)

    def started(self, message: TurnStarted) -> None:
        """The turn's prompt is built: the inspector shows what is being sent (a message that waited
        for its model, a branch's continued prompt), and after the turn what was captured."""
        if self.turn is not None and message.turn == self.turn.index:
            self.inspector.show_preview(message.view)

    def _check_fit(self, handle, messages: list[dict], params: SamplingParams, memory: bool,
                   tools: list[dict] | None = None) -> TurnFit | None:
        """Before a turn (in the worker): a TurnFit when it is over the model's context (always
        checked, a hard limit) or, with ``memory``, would not fit in free memory; else None.

        A turn close to the memory limit gets a warning and goes ahead; so does one whose memory
        could not be estimated, and the warning says so.
        """
        fit = plan_turn(handle, messages, params, tools)
        if fit.over == "context" or (fit.over == "memory" and memory):
            return fit
        if memory and fit.verdict.level == "warn" or fit.estimate_error:
            line = fit.verdict.line if not fit.estimate_error else fit.estimate_error
            self.app.notify(line, severity="warning", timeout=12, markup=False)
        return None

    async def wont_fit(self, message: TurnWontFit) -> None:
        """Nothing was generated: take the empty reply away and ask what to do."""
        turn = self.turn
        if turn is None or message.turn != turn.index:
            return
        self.turn = None
        self.turn_count -= 1  # nothing ran: the next turn takes its number
        await self.chat.remove_from_last(Reply)
        if not await self._put_back(turn):
            self.finish_record(turn.message_id, "", "stopped", None)
        self.status.set(turn="")
        self.app.push_screen(FitScreen(message.fit), partial(self._fit_answered, message.fit, message.request))

    async def _fit_answered(self, fit: TurnFit, request: TurnRequest, choice: str | None) -> None:
        # A branch asked again goes on from the same tokens, in place of the same reply.
        if choice == "truncate":
            self.set_params(replace(self.params, max_prompt_tokens=fit.budget))
            self.chat.add_notice(f"each prompt is kept within {fit.budget:,} tokens by {fit.rule}; "
                                 "/budget off removes the limit")
            await self.generate(request=request)
        elif choice == "shorter":
            self.set_params(replace(self.params, max_new_tokens=fit.reply_room))
            self.chat.add_notice(f"max_new_tokens = {fit.reply_room:,}: the longest reply the context leaves room "
                                 "for (/set max_new_tokens N changes it)")
            await self.generate(request=request)
        elif choice == "send":
            await self.generate(check_memory=False, request=request)
        elif request.replaces is not None:
            pass  # the branch was not asked for again: the reply it would have replaced is back already
        elif self.input.text.strip():  # cancelled, and something is typed already: keep both
            self.chat.add_notice("not sent; Ctrl+R sends it, /budget N keeps prompts within N tokens")
        else:  # cancelled: the unanswered message goes back to the input
            await self.take_back_last_message()

    # -- while it streams ----------------------------------------------------------------------

    async def turn_done(self, message: TurnDone) -> None:
        turn = self.turn
        if turn is None or message.turn != turn.index:
            return
        done = message.done
        status = reply_status(done.stop_reason)
        stats = reply_stats(done, turn.reply.made_by)
        await turn.reply.finish(done.text, status, stats, done.stop_reason)
        self.chat.redraw(turn.reply)
        self.turn = None
        said = bool(done.text or done.tool_calls)  # a server's call may come with no words
        if said:
            self.conversation.add_assistant(done.text)
        self._end_record(turn, done.text, status, done)
        if not said:
            await self._put_back_empty(turn)
        if done.error:
            self.chat.add_notice(done.error, error=True)
        s = done.stats
        context = s.prompt_tokens + s.new_tokens
        self.status.set(turn="", ttft_s=s.ttft_s, tok_s=s.decode_tok_s, context_used=context,
                        kv=self._context_projection(context))
        if done.stop_reason != "error" or done.captured_ids is not None:
            self.inspector.show_captured(PromptCheck.of(message.view, done.captured_ids, done.prompt_count,
                                                        level=done.prompt_check, cached=s.cached_tokens,
                                                        cache_note=done.cache_note))
        self.meter.log_turn(turn.index, context)
        self.show_kept()
        if self.after_reply is not None and said:
            await self.after_reply(turn.reply, done)

    # -- the prompt cache ----------------------------------------------------------------------

    def show_kept(self) -> None:
        """The meter shows what the active model's prompt cache keeps for the next turn."""
        cache = getattr(self.models.handle, "prompt_cache", None)
        self.meter.show_kept(*((cache.tokens, cache.nbytes) if cache is not None else (0, 0)))

    def release_cache(self) -> None:
        """The conversation the kept cache was built from is gone (/clear, another one) or another
        model answers now: give its memory back."""
        handle = self.models.handle
        if handle is not None and hasattr(handle, "release_cache"):
            handle.release_cache()
        self.show_kept()

    def _context_projection(self, context_tokens: int) -> str:
        if not getattr(self.models.handle, "torch", True):
            return ""  # a server's KV cache is its own (the meter shows what it reports)
        try:
            projection = context_projection(self.models.handle, context_tokens)
        except Exception:
            return ""
        text = f"KV {format_bytes(projection.kv_bytes)}"
        if projection.tokens_that_fit is not None:
            text += f" · ~{projection.tokens_that_fit:,} more tok fit"
        return text

    async def generation_failed(self) -> None:
        """The generate worker itself raised (its one line is shown by the app): keep what came."""
        if self.turn is None:
            return
        turn, self.turn = self.turn, None
        await turn.reply.finish(turn.reply.text, "error", None, "error")
        self._end_record(turn, turn.reply.text, "error", None)
        if not turn.reply.text:
            await self._put_back_empty(turn)
        self.status.set(turn="")

    async def _put_back_empty(self, turn: Turn) -> None:
        """A branch that ended without words: its empty reply goes, the replaced one comes back."""
        if turn.request.replaces is not None and not turn.branch_saved:
            await self.chat.remove_from_last(Reply)
            await self._put_back(turn)

    # -- stopping ------------------------------------------------------------------------------

    def stop(self) -> bool:
        """Ask the turn to stop between two tokens; False when nothing is being generated."""
        if self.turn is None:
            return False
        self.turn.stop_event.set()
        self.status.set(turn="stopping…")
        return True

    def abandon(self) -> threading.Event | None:
        """Stop the turn and forget it (the partial reply is saved); the event is set once its thread ended."""
        if self.turn is None:
            return None
        turn, self.turn = self.turn, None
        turn.stop_event.set()
        turn.reply.freeze()
        self._end_record(turn, turn.reply.text, "stopped", None)
        if not turn.reply.text and turn.request.replaces is not None and not turn.branch_saved:
            self.conversation.add_assistant(turn.request.replaces.text)  # its row was never touched
        self.status.set(turn="")
        return turn.finished

    def release_for_switch(self) -> threading.Event | None:
        """A model switch is coming: stop the turn (it ends with what it has); the event is set once it did."""
        if self.turn is None:
            return None
        self.turn.stop_event.set()
        return self.turn.finished

    # -- editing the conversation --------------------------------------------------------------

    async def regenerate(self) -> None:
        try:
            self.check_can_send()
            if self.conversation.pop_last_reply() is not None:
                await self.chat.remove_from_last(Reply)
            if not self.conversation.messages or self.conversation.messages[-1]["role"] not in ("user", "tool"):
                raise UsageError("there is no message to answer", "type one first")
        except UsageError as err:
            self.chat.add_notice(str(err), error=True)
            return
        self.recorder.truncate(self.stored_count())
        await (self.answer_again or self.generate)()

    async def edit_last(self) -> None:
        if self.turn is not None:
            self.chat.add_notice("a reply is still being generated — press Esc to stop it first", error=True)
            return
        if not await self.take_back_last_message():
            self.chat.add_notice("there is no message to edit", error=True)

    async def take_back_last_message(self) -> bool:
        """Move the last user message (and what follows it) from the chat into the input."""
        text = self.conversation.pop_last_user()
        if text is None:
            return False
        await self.chat.remove_from_last(UserMessage)
        self.recorder.truncate(self.stored_count())
        self.input.load_text(text)
        self.input.move_cursor(self.input.document.end)
        self.input.focus()
        self.changed(now=False)
        return True

    async def clear(self) -> None:
        self.abandon()
        self.on_fresh()
        self.release_cache()
        self.conversation.clear()
        await self.chat.clear()
        self.recorder.truncate(0)
        self.chat.add_notice("conversation cleared")
        self.changed()

    async def new_conversation(self) -> None:
        self.abandon()
        self.on_fresh()
        self.release_cache()
        self.recorder.new()
        self.conversation.clear()
        await self.chat.clear()
        self.chat.add_notice("new conversation")
        self.changed()

    async def restore(self, stored, keep: tuple = ()) -> None:
        """Show a stored conversation (``Recorder.open``) in place of what the chat holds but
        ``keep``, and continue it."""
        self.on_fresh()
        self.conversation = stored.to_conversation()
        if stored.params:
            self.params = stored.sampling_params()
        self.status.set(budget=self.params.max_prompt_tokens)
        await self.chat.clear(keep)
        saved = []
        for m in stored.messages:
            if m.role == "user":
                saved.append(Saved("user", m.content))
            elif m.role == "tool":
                saved.append(Saved("tool", m.content, reply=(m.stats or {}).get("tool") or {}))
            elif m.role == "assistant" and (m.stats or {}).get("compare"):
                saved.append(compared_saved(m, stored.model))
            elif m.role == "assistant":
                place = 1 + sum(b.created < m.created for b in m.branches)  # replies go oldest first
                saved.append(Saved("assistant", m.content, m.model or stored.model or "", {
                    "status": m.status, "stats": m.stats, "tokens": m.tokens, "message_id": m.id,
                    "branch": (place, len(m.branches) + 1) if m.branches else None}))
        await self.chat.show_saved(saved)
        self.changed()

    def set_system(self, text: str | None) -> None:
        self.conversation.set_system(text)
        self.recorder.configure(system=text)
        self.chat.add_notice("system prompt removed" if text is None else "system prompt set")
        self.changed()

    def set_params(self, params: SamplingParams) -> None:
        self.params = params
        self.recorder.configure(params=params.to_json())
        self.status.set(budget=params.max_prompt_tokens)

    def set_budget(self, arg: str) -> None:
        """``/budget [N|off]``: show or set the prompt budget."""
        if not arg:
            value = self.params.max_prompt_tokens
            self.chat.add_notice(f"prompt budget: {value:,} tokens" if value else
                                 "no prompt budget: the whole conversation is sent (the family's own rules apply)")
            return
        self.set_params(self.params.with_value("max_prompt_tokens", arg))
        value = self.params.max_prompt_tokens
        rule = truncation_rule(self.models.handle.family) if self.models.handle is not None else "truncation"
        self.chat.add_notice(f"each prompt is kept within {value:,} tokens by {rule}" if value
                             else "prompt budget removed")
        self.changed()

    # -- saving as it happens ------------------------------------------------------------------

    def messages_to_save(self) -> list[tuple[str, str, str | None]]:
        """The conversation as ``(role, text, model)``, to save it into a new database."""
        models = iter(self.chat.reply_models())  # earlier replies not on screen included
        out = []
        for m in self.conversation.messages:
            if m["role"] == "system":
                continue
            model = next(models) if m["role"] == "assistant" else None
            out.append((m["role"], m["content"], model))
        return out

    def stored_count(self) -> int:
        return sum(1 for m in self.conversation.messages if m["role"] != "system")

    def record(self, role: str, text: str, **kw) -> int | None:
        try:
            return self.recorder.add(role, text, **kw)
        except Exception as err:  # the chat goes on without the database
            self.app.notify(f"could not save: {error_line(err)}", severity="warning", markup=False)
            return None

    def finish_record(self, msg_id, text: str, status: str, done: DoneEvent | None, tokens: list | None = None,
                      made_by: str | None = None) -> None:
        """Save how a reply ended; a reply with no text (and no call a server read) is dropped, as it is
        from the chat."""
        try:
            if text or done is not None and done.tool_calls:
                self.recorder.finish(msg_id, text, status, done, tokens, made_by)
            else:
                self.recorder.drop(msg_id)
        except Exception as err:
            self.app.notify(f"could not save: {error_line(err)}", severity="warning", markup=False)

"""Compare mode: one conversation through two to four loaded models at once, and where they disagree.

``/compare 1 3`` picks the slots (the first is the reference; slots not loaded
yet are loaded beside the others); each message is then answered by every
one of them into the panes of one ``ComparedTurn``: one after another where
the models share a device (so each one's tok/s and memory are its own), at
once where none does, as the line above the panes says. A thread worker
streams each reply through the same pump as a turn, then reads each reply
teacher-forced under the reference (``backends.generation.compare``) and
posts ``CompareEnded``. The conversation goes on from the reference's reply
until Enter on another pane's token (or ``/keep N``) picks that one; every
reply is saved, the kept one in place and the others as the turn's branches,
each with its figures.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from backends.core.errors import UsageError, error_line
from backends.core.events import Alternative
from backends.core.units import format_bytes
from backends.generation.compare.figures import finite
from backends.generation.compare.replies import ReplyRun, Schedule, schedule
from backends.generation.compare.turn import PairOutcome, compare_turn, read_under_reference
from backends.memory.fit import plan_turn
from backends.prompt.check import PromptCheck
from backends.prompt.families.base import token_pieces

from ..messages import ComparedPrompt, ComparedReplyDone, CompareEnded, CompareProgress, TokensArrived, TurnDone
from ..pump import pump_generation
from ..session import Recorder, reply_stats, reply_status
from ..widgets.compared import ComparedTurn, compared_turn_of
from ..widgets.reply import Reply
from .registry import ModelRegistry
from .turns import Turns, made_by

#: The other model's likeliest tokens kept per position, for the side-by-side token view.
TOP_K = 5


@dataclass
class CompareRun:
    index: int
    widget: ComparedTurn
    slots: list[int]
    handles: list
    plan: Schedule  # one after another or at once, and the line that says so
    stop: threading.Event = field(default_factory=threading.Event)
    message_id: int | None = None
    views: dict = field(default_factory=dict)  # pane -> the PromptView it is answered from
    checks: dict = field(default_factory=dict)  # pane -> its PromptCheck, once its reply ended


def _reply_record(run: CompareRun, i: int, text: str, status: str, done=None, more_stats: dict | None = None) -> dict:
    """Pane ``i``'s reply as ``Recorder.add_compared`` saves it."""
    pane = run.widget.panes[i]
    return {"model": run.widget.labels[i], "text": text, "status": status, "done": done, "tokens": pane.tokens,
            "made_by": pane.made_by, "more_stats": more_stats}


class Comparing:
    def __init__(self, app, models: ModelRegistry, turns: Turns, recorder: Recorder, *, chat, status,
                 inspector) -> None:
        self.app = app
        self.inspector = inspector
        self.models = models
        self.turns = turns
        self.recorder = recorder
        self.chat = chat
        self.status = status
        self.slots: list[int] | None = None  # compare mode is on: these slots answer, the first is the reference
        self.running: CompareRun | None = None
        self._waiting: list[int] | None = None  # slots asked for, some still loading
        self._ended: CompareEnded | None = None  # the end, come before a pane's last text was drawn
        #: Whether tools are on in the conversation (set by the app): compared models are offered none.
        self.tools_on: Callable[[], bool] = lambda: False
        self._count = 0

    # -- /compare ------------------------------------------------------------------------------

    def command(self, arg: str) -> None:
        words = arg.split()
        if not words:
            if self.slots is None:
                raise UsageError("compare mode is off", "/compare 1 2 sends each message to models 1 and 2 "
                                 "(the first is the reference; up to 4)")
            self.chat.add_notice(f"compare mode: models {self._names(self.slots)}; /compare off ends it")
            return
        if words == ["off"]:
            self.refuse_turns()
            was, self.slots, self._waiting = self.slots, None, None
            self.status.set(compare="")
            self.turns.changed()  # the preview shows one model's prompt again
            self.chat.add_notice("compare mode is off" + (f": {self.models.current.label} answers alone"
                                                          if was and self.models.current else ""))
            return
        if not all(w.isdigit() for w in words):
            raise UsageError(f"/compare takes model numbers, not '{arg}'", "for example: /compare 1 3 (F2 lists them)")
        slots = [int(w) - 1 for w in words]
        if not 2 <= len(slots) <= 4 or len(set(slots)) != len(slots):
            raise UsageError("/compare needs two to four different models", "for example: /compare 1 3")
        missing = [n + 1 for n in slots if not 0 <= n < len(self.models.slots)]
        if missing:
            raise UsageError(f"there is no model {missing[0]}", "F2 lists the models (and adds one)")
        self.refuse_turns()
        self._waiting = slots
        self._load_next()

    def add(self, index: int) -> None:
        """``c`` in the model picker: compare slot ``index`` with the active model, or add it to
        those compared (at most 4)."""
        base = list(self.slots) if self.slots else [self.models.active] if self.models.active is not None else []
        if index in base:
            self.chat.add_notice(f"model {index + 1} is already compared", error=True)
            return
        try:
            self.command(" ".join(str(i + 1) for i in [*base, index]))
        except UsageError as err:
            self.chat.add_notice(str(err), error=True)

    def _load_next(self) -> None:
        """Load the asked-for slots that are not loaded yet, one at a time, beside the others."""
        slots = self._waiting
        if slots is None:
            return
        for index in slots:
            if self.models.slots[index].handle is None:
                if self.models.loading is None:
                    self.chat.add_notice(f"loading model {index + 1} to compare it (the others stay loaded)")
                    self.models.load(index, keep_others=True)
                return
        self._waiting = None
        self.slots = slots
        plan = schedule([self.models.slots[i].handle for i in slots])
        self.status.set(compare=self._mode_line())
        tools = "; tools are not offered to compared models" if self.tools_on() else ""
        self.chat.add_notice(f"compare mode: each message goes to models {self._names(slots)}; "
                             f"{plan.line}{tools}. /compare off ends it")
        self.turns.changed()  # the preview shows every model's prompt

    def model_ready(self) -> None:
        """A load finished (the registry's hook): go on with the slots asked for."""
        self._load_next()

    def load_failed(self) -> None:
        if self._waiting is not None:
            self._waiting = None
            self.chat.add_notice("compare mode is off: a model it needs did not load", error=True)

    def _mode_line(self) -> str:
        """The status bar's part while compare mode is on: ``compare 1·3``."""
        return "compare " + "·".join(str(i + 1) for i in self.slots) if self.slots else ""

    def _names(self, slots: list[int]) -> str:
        return ", ".join(f"{i + 1} {self.models.slots[i].label}" + (" (reference)" if n == 0 else "")
                         for n, i in enumerate(slots))

    # -- a compared turn -----------------------------------------------------------------------

    @property
    def on(self) -> bool:
        return self.slots is not None

    def refuse_turns(self) -> None:
        """The gate for sending (and for /compare): not while a compared turn runs."""
        if self.running is not None:
            raise UsageError("the models are still answering", "press Esc to stop them")

    def _handles(self) -> list:
        """The compared models' handles; UsageError when one is not loaded any more (a switch let it go)."""
        handles = [self.models.slots[i].handle for i in self.slots]
        gone = [i + 1 for i, h in zip(self.slots, handles) if h is None]
        if gone:
            raise UsageError(f"model {gone[0]} is not loaded any more",
                             f"/compare {' '.join(str(i + 1) for i in self.slots)} loads it again")
        return handles

    async def send(self, text: str) -> None:
        self._handles()  # before the message goes in: a refused one stays in the input
        self.turns.conversation.add_user(text)
        self.chat.add_user(text)
        self.turns.record("user", text)
        await self.answer()

    async def answer(self) -> None:
        """Answer the conversation as it stands with every compared model (a message sent, Ctrl+R)."""
        slots = self.slots
        handles = self._handles()
        labels = [self.models.slots[i].label for i in slots]
        plan = schedule(handles)
        widget = ComparedTurn(labels, plan.line)
        await self.chat.mount(widget)
        self.chat.anchor()
        for pane, handle in zip(widget.panes, handles):
            pane.made_by = made_by(handle)
            if handle.info.footprint_bytes:
                pane.detail = f"weights {format_bytes(handle.info.footprint_bytes)}"
        self._count += 1
        run = CompareRun(self._count, widget, list(slots), handles, plan)
        self.running = run
        self.status.set(compare="comparing")
        self.app.run_worker(partial(self._work, run, self.turns.conversation.copy_messages(), self.turns.params),
                            name="compare", group="compare", thread=True, exit_on_error=False)

    def abandon(self) -> None:
        """The app ends during a compared turn: its threads stop at their next token, and what each pane
        has said is saved now (stopped: the kept one in place, the others its branches), as a plain turn's
        partial reply is; the figures, which come after the replies, are not."""
        run, self.running = self.running, None
        if run is None:
            return
        run.stop.set()
        said = [i for i, pane in enumerate(run.widget.panes) if pane.text]
        if not said:
            return
        self.recorder.add_compared([_reply_record(run, i, run.widget.panes[i].text, "stopped") for i in said], 0)

    def stop(self) -> bool:
        if self.running is None:
            return False
        self.running.stop.set()
        self.status.set(compare="stopping…")
        return True

    def _work(self, run: CompareRun, messages: list[dict], params) -> None:
        """In the worker thread: every reply, then the reading; always ends with ``CompareEnded``."""
        runs = [ReplyRun(h) for h in run.handles]
        try:
            for number, handle in enumerate(run.handles, start=1):
                fit = plan_turn(handle, messages, params)
                if fit.over == "context":
                    raise UsageError(f"model {run.slots[number - 1] + 1}: {fit.verdict.line}",
                                     "/budget N keeps prompts within N tokens")
            if run.plan.together:
                threads = [threading.Thread(target=self._answer, args=(run, runs, i, messages, params), daemon=True)
                           for i in range(len(runs))]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            else:
                for i in range(len(runs)):
                    if run.stop.is_set():
                        break  # the ones after a stop are not asked at all
                    self.app.post_message(CompareProgress(run.index, f"{run.slots[i] + 1} answering"))
                    self._answer(run, runs, i, messages, params)
            pairs, divergence = [], {}
            if not run.stop.is_set() and all(r.done is not None for r in runs):
                self.app.post_message(CompareProgress(run.index, "reading the replies"))
                pairs = compare_turn(runs, run.stop, top_k=TOP_K)
                divergence = self._divergence(runs, pairs, run.stop)
            self.app.post_message(CompareEnded(run.index, runs, pairs, divergence))
        except Exception as err:  # noqa: BLE001 — one line in the chat; the replies so far are kept
            self.app.post_message(CompareEnded(run.index, runs, error=error_line(err)))

    def _answer(self, run: CompareRun, runs: list[ReplyRun], i: int, messages, params) -> None:
        pane = run.widget.panes[i]

        def post(message) -> None:
            if isinstance(message, TokensArrived):
                runs[i].tokens.extend(message.tokens)
                pane.post_message(message)
            elif isinstance(message, TurnDone):
                runs[i].done = message.done
                # Through the pane, so it comes after every batch of text before it, and bubbles to the app.
                pane.post_message(ComparedReplyDone(run.index, i, message.done))

        generation = run.handles[i].stream(messages, params, stop_event=run.stop)
        self.app.post_message(ComparedPrompt(run.index, i, generation.view))
        pump_generation(generation, post, run.index, pace=pane.pace)
        generation.join(5)

    def _divergence(self, runs: list[ReplyRun], pairs: list[PairOutcome], stop) -> dict[int, dict]:
        """What each pane is coloured by: the reference's reply against the first comparable other,
        each other's own reply against the reference; the other model's top K as pieces."""
        found: dict[int, dict] = {}
        first = next((p for p in pairs if p.figures is not None), None)
        if first is not None:
            found[0] = self._figures(first.figures, runs[first.other].handle, first.other)
        for i, figures in read_under_reference(runs, stop, top_k=TOP_K).items():
            found[i] = self._figures(figures, runs[0].handle, 0)
        return found

    @staticmethod
    def _figures(figures, other_handle, other: int) -> dict:
        ids = sorted({i for row in figures.top_other for i, _ in row})
        pieces = dict(zip(ids, token_pieces(other_handle.family, ids))) if ids else {}
        top = [[Alternative(i, pieces[i], v) for i, v in row] for row in figures.top_other]
        return {"kl": list(figures.kl), "agree": list(figures.top1_agree), "top": top, "other": other}

    # -- the UI's side -------------------------------------------------------------------------

    def targets(self) -> list | None:
        """What the prompt preview renders in compare mode: (label, handle) of each model, loaded."""
        if self.slots is None:
            return None
        slots = [self.models.slots[i] for i in self.slots]
        return [(s.label, s.handle) for s in slots] if all(s.handle is not None for s in slots) else None

    def prompt(self, message: ComparedPrompt) -> None:
        run = self.running
        if run is None or message.turn != run.index:
            return
        run.views[message.pane] = message.view
        self._show_prompts(run)

    def _show_prompts(self, run: CompareRun) -> None:
        if len(run.views) == len(run.handles):
            self.inspector.show_compared(run.widget.labels, [run.views[i] for i in range(len(run.handles))],
                                         [run.checks.get(i) for i in range(len(run.handles))])

    def progress(self, message: CompareProgress) -> None:
        if self.running is not None and message.turn == self.running.index and not self.running.stop.is_set():
            self.status.set(compare=f"comparing · {message.text}")

    async def reply_done(self, message: ComparedReplyDone) -> None:
        run = self.running
        if run is None or message.turn != run.index:
            return
        pane, done = run.widget.panes[message.pane], message.done
        await pane.finish(done.text, reply_status(done.stop_reason), reply_stats(done, pane.made_by), done.stop_reason)
        self.chat.redraw(pane)
        view = run.views.get(message.pane)
        if view is not None and (done.stop_reason != "error" or done.captured_ids is not None):
            run.checks[message.pane] = PromptCheck.of(view, done.captured_ids, done.prompt_count,
                                                      level=done.prompt_check, cached=done.stats.cached_tokens,
                                                      cache_note=done.cache_note)
            self._show_prompts(run)
        if done.error:
            self.chat.add_notice(f"model {run.slots[message.pane] + 1}: {done.error}", error=True)
        if self._ended is not None:
            await self.ended(self._ended)

    async def ended(self, message: CompareEnded) -> None:
        run = self.running
        if run is None or message.turn != run.index:
            return
        if any(r.done is not None and pane.status is None for r, pane in zip(message.runs, run.widget.panes)):
            self._ended = message  # a pane has not drawn its end yet: once it has
            return
        self._ended = None
        self.running = None
        for r, pane in zip(message.runs, run.widget.panes):
            if r.done is None:  # never asked: stopped before its turn, or the turn failed first
                pane.detail = "not asked: stopped before its turn" if run.stop.is_set() else "not asked"
                await pane.finish("", "stopped", None, None)
        self.status.set(compare=self._mode_line())
        widget = run.widget
        for index, figures in message.divergence.items():
            figures["label"] = widget.labels[figures["other"]]
        widget.divergence = message.divergence
        widget.show_figures(self._lines(run, message))
        if message.error:
            self.chat.add_notice(message.error, error=True)
        answered = [i for i, r in enumerate(message.runs) if r.done is not None and r.done.text]
        if not answered:
            self.chat.add_notice("no model answered: nothing was kept", error=True)
            return
        kept = 0 if 0 in answered else answered[0]
        self.turns.conversation.add_assistant(message.runs[kept].done.text)
        run.message_id = widget.message_id = self.recorder.add_compared(
            [self._saved(run, message, i) for i in answered], answered.index(kept))
        widget.keep(kept)
        self.turns.changed()

    def _saved(self, run: CompareRun, message: CompareEnded, i: int) -> dict:
        done = message.runs[i].done
        pair = next((p for p in message.pairs if p.other == i), None)
        figures = {"pane": i + 1, "of": len(run.handles), "reference": run.widget.labels[0]}
        if i == 0:  # what the turn said above and under its panes
            figures["lines"] = self._lines(run, message)
            figures["schedule"] = run.plan.line
        if pair is not None:
            figures["against_reference"] = pair.to_json()
        if i in message.divergence:
            d = message.divergence[i]
            # JSON has no infinity: a token one model rules out is saved as null (and drawn as the most divergent).
            figures["divergence"] = {"kl": [finite(v) for v in d["kl"]], "agree": d["agree"], "other": d["other"],
                                     "top": [[[a.id, a.piece, a.logprob] for a in row] for row in d["top"]]}
        return _reply_record(run, i, done.text, reply_status(done.stop_reason), done, {"compare": figures})

    def _lines(self, run: CompareRun, message: CompareEnded) -> list[str]:
        lines = []
        for pair in message.pairs:
            who = f"{run.slots[pair.other] + 1} vs {run.slots[0] + 1}"
            if pair.figures is not None:
                summary = pair.figures.summary()
                stopped = "" if pair.figures.complete else f" (stopped after {summary.scored} tokens)"
                lines.append(f"{who}: {summary.line()}{stopped}")
            else:
                lines.append(f"{who}: {pair.note}")
            if pair.figures is None or pair.words.first_difference is not None:
                lines.append(f"{who}, word by word: similarity {pair.words.similarity:.2f}")
        if message.divergence:
            lines.append("d colours each reply by its divergence from the reference; v walks the tokens "
                         "(Enter on one keeps that reply)")
        return lines

    def _last_turn(self) -> ComparedTurn | None:
        """The compared turn the conversation ends with, if it does end with one."""
        last = self.chat.last_reply()
        widget = compared_turn_of(last) if last is not None else None
        return widget if widget is not None and widget.kept is not None else None  # kept: it has ended

    def keep(self, pane: int) -> None:
        """Go on from pane ``pane``'s reply (0-based) of the compared turn the conversation ends with."""
        widget = self._last_turn()
        if widget is None:
            raise UsageError("there is no compared turn to keep a reply of", "/compare 1 2, then send a message")
        panes = widget.panes
        if not 0 <= pane < len(panes) or panes[pane].status is None or not panes[pane].text:
            raise UsageError(f"the compared turn has no reply {pane + 1}", f"1 to {len(panes)}")
        if widget.kept == pane:
            return
        self.turns.conversation.pop_last_reply()
        self.turns.conversation.add_assistant(panes[pane].text)
        self.recorder.keep_compared(widget.message_id, pane + 1)
        widget.keep(pane)
        self.chat.add_notice(f"the conversation goes on from reply {pane + 1} ({widget.labels[pane]})")
        self.turns.changed()

    def keep_reply(self, reply: Reply) -> None:
        """Enter on a token of a compared reply: keep that one."""
        widget = compared_turn_of(reply)
        if widget is None or widget is not self._last_turn():
            raise UsageError("Enter keeps a reply of the last compared turn", "this reply is not one")
        self.keep(widget.panes.index(reply))


"""Memory profiles run from the app: ``/profile [LENGTHS]`` and ``p`` on the memory screen (F9).

A mixin of ``LlmTuiApp``. ``backends.profile.profile_rows`` runs in a thread
worker on the active model and reports back with ``ProfileProgress`` (the rows
measured so far, replaced by newer ones when the screen is busy) and one
``ProfileDone``. The rows land on the app as ``profile_rows``, measured on
``profile_model``; they are dropped when another model becomes active. While a
profile runs no message can be sent (``ChatFlow.check_can_send``); Esc on the
memory screen stops it and the rows measured so far stay.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import partial

from textual.message import Message

from backends.core.errors import UsageError
from backends.profile.lengths import (
    APP_DECODE_TOKENS,
    check_lengths,
    context_limit,
    default_lengths,
    parse_lengths,
)
from backends.profile.measure import profile_rows

from .screens.memory import MemoryScreen
from .worker import error_line


@dataclass
class ProfileRun:
    """The profile being measured."""

    handle: object
    label: str
    lengths: list[int]
    decode_tokens: int
    stop_event: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    rows: list[dict] = field(default_factory=list)
    note: str = ""  # the progress line


class ProfileProgress(Message):
    """A profile moved on: what it measures now, how far (0-1), and every row measured so far."""

    def __init__(self, run: ProfileRun, text: str, fraction: float | None, rows: list[dict]) -> None:
        super().__init__()
        self.run = run
        self.text = text
        self.fraction = fraction
        self.rows = rows

    def can_replace(self, message: Message) -> bool:
        # Each message carries all the rows so far: only the newest matters.
        return isinstance(message, ProfileProgress) and message.run is self.run


class ProfileDone(Message):
    """A profile ended: its rows (partial when stopped or out of memory) and the error that ended it, if any."""

    def __init__(self, run: ProfileRun, rows: list[dict], error: str | None) -> None:
        super().__init__()
        self.run = run
        self.rows = rows
        self.error = error


class ProfileFlow:
    """Measuring memory and speed against context length on the active model."""

    #: Tokens decoded after each prefill (a decode speed without a long wait on a CPU).
    profile_decode_tokens: int | None = None

    def start_profile(self, arg: str = "") -> ProfileRun:
        """Profile the active model at the lengths in ``arg`` (``256,512,1k``; empty: the
        defaults that fit its context). Refusals raise UsageError (a chat notice)."""

        if self.profiling is not None:
            raise UsageError("a memory profile is already running",
                             "wait for it, or press Esc in the memory screen (F9) to stop it")
        if self.turn is not None:
            raise UsageError("a reply is still being generated", "press Esc to stop it, then profile")
        if self.models.loading is not None:
            raise UsageError("a model is loading", "profile when it is ready")
        handle = self.models.handle
        if handle is None:
            raise UsageError("no model is loaded", "press F2 to pick one, then profile")
        decode = self.profile_decode_tokens if self.profile_decode_tokens is not None else APP_DECODE_TOKENS
        arg = (arg or "").strip()
        lengths = parse_lengths(arg, "/profile") if arg else default_lengths(handle, decode)
        check_lengths(lengths, context_limit(handle), decode, "/profile")
        run = ProfileRun(handle, self.models.current.label, lengths, decode)
        run.note = f"profiling {len(lengths)} context lengths ({', '.join(f'{n:,}' for n in lengths)}) · " \
                   f"{decode} decode tokens each"
        self.profiling = run
        self.status.set(state="profiling…")
        for screen in self._memory_screens():
            screen.show_progress(run.note)
        self.run_worker(partial(self._profile_work, run), name="profile", group="profile", thread=True,
                        exit_on_error=False)
        return run

    def _palette_profile(self) -> None:
        """The command palette's "Memory: run a profile": default lengths; a refusal is a chat notice."""
        try:
            self.start_profile("")
        except UsageError as err:
            self.chat.add_notice(str(err), error=True)

    def stop_profile(self) -> bool:
        """Ask the running profile to stop (between two steps); False when there is none to stop."""
        run = self.profiling
        if run is None or run.stop_event.is_set():
            return False
        run.stop_event.set()
        run.note = "stopping the profile… (the rows measured so far stay)"
        self.status.set(state="stopping the profile…")
        for screen in self._memory_screens():
            screen.show_progress(run.note)
        return True

    def _profile_work(self, run: ProfileRun) -> None:
        """In the worker thread: measure, post progress, always end with ProfileDone."""

        measured: list[dict] = []
        error = None

        def progress(text: str, fraction: float | None = None) -> None:
            self.post_message(ProfileProgress(run, text, fraction, list(measured)))

        try:
            profile_rows(run.handle, run.lengths, run.decode_tokens, progress=progress,
                         stop_event=run.stop_event, on_row=measured.append)
        except Exception as err:  # a profile that fails is one line, never a crash
            error = error_line(err)
        finally:
            self.post_message(ProfileDone(run, list(measured), error))

    async def on_profile_progress(self, message: ProfileProgress) -> None:
        run = message.run
        if run is not self.profiling or run.stop_event.is_set():
            return
        new_rows = len(message.rows) != len(run.rows)
        run.rows = message.rows
        total = len(run.lengths)
        done = len(message.rows)
        if message.fraction is not None and message.fraction < 1:
            run.note = f"{message.text} · {done} of {total} lengths measured · Esc stops"
            self.status.set(state=f"{message.text} ({done + 1}/{total})")
        for screen in self._memory_screens():
            if new_rows:
                await screen.show_profile(run.rows, run.label, run.note)
            else:
                screen.show_progress(run.note)

    async def on_profile_done(self, message: ProfileDone) -> None:
        run = message.run
        if run is not self.profiling:
            return
        self.profiling = None
        if self.turn is None:
            self.status.set(state="")
        rows = message.rows
        if run.handle is not self.models.handle:
            # The active model changed while it ran: the rows describe a model no longer in use.
            self.chat.add_notice(f"the memory profile of {run.label} was dropped: the model changed")
            for screen in self._memory_screens():
                screen.show_progress("")
            return
        note, failed = self._profile_note(run, rows, message.error)
        if rows:
            self.profile_rows = rows
            self.profile_model = run.label
            self.profile_handle = run.handle
        if message.error:
            self.chat.add_notice(f"memory profile: {message.error}", error=True)
        screens = self._memory_screens()
        for screen in screens:
            await screen.show_profile(self.profile_rows, self.profile_model, note, error=failed)
        if not screens and rows:
            self.push_screen(MemoryScreen(self.meter.turns, self.profile_rows, profile_label=self.profile_model,
                                          note=note, note_error=failed))

    def _profile_note(self, run: ProfileRun, rows: list[dict], error: str | None) -> tuple[str, bool]:
        """How the profile ended, in one line (and whether that is a failure)."""
        good = [r for r in rows if not r.get("error")]
        seconds = time.monotonic() - run.started
        if error:
            return f"profile failed after {len(good)} of {len(run.lengths)} lengths: {error}", True
        oom = next((r for r in rows if r.get("error")), None)
        if oom is not None:
            return (f"{oom['error']} at {oom['context_tokens']:,} tokens of context "
                    f"(the {len(good)} rows before it are complete)"), True
        if len(good) < len(run.lengths):
            return f"profile stopped: {len(good)} of {len(run.lengths)} lengths measured", False
        return f"profile done: {len(good)} lengths in {seconds:.1f} s", False

    def _memory_screens(self) -> list:
        return [s for s in self.screen_stack if isinstance(s, MemoryScreen)]

    # -- the rows belong to the model they were measured on ------------------------------------

    def load_slot(self, index: int) -> None:
        run = self.profiling
        switching = not (self.models.active == index and self.models.slots[index].handle is not None)
        if run is not None and switching and self.models.loading is None:
            self.stop_profile()  # the model it measures is about to go
        super().load_slot(index)

    def _activate(self, index: int) -> None:
        super()._activate(index)
        if self.profile_rows and self.models.slots[index].handle is not self.profile_handle:
            self.profile_rows = []
            self.profile_model = None
            self.profile_handle = None
            for screen in self._memory_screens():
                self.call_later(screen.show_profile, [], None, "")

    def on_unmount(self) -> None:
        if self.profiling is not None:
            self.profiling.stop_event.set()  # leaving: the worker ends after its current step

"""Memory profiles run from the app: ``/profile [LENGTHS]``, ``p`` on the memory screen (F9), the palette.

``backends.profile.measure.profile_rows`` runs in a thread worker on the
active model and reports with ``ProfileProgress`` (the rows so far, newer
ones replacing older) and one ``ProfileDone``. The rows belong to the model
they were measured on: they are dropped when another model becomes active.
While a profile runs no message can be sent (``gate``); Esc on the memory
screen stops it and the rows measured so far stay.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import partial

from backends.core.errors import UsageError, error_line
from backends.profile.lengths import (
    APP_DECODE_TOKENS,
    check_lengths,
    context_limit,
    default_lengths,
    parse_lengths,
)
from backends.profile.measure import ProfileRow, profile_rows

from ..messages import ProfileDone, ProfileProgress
from ..screens.memory import MemoryScreen
from .registry import ModelRegistry
from .turns import Turns


@dataclass
class ProfileRun:
    """The profile being measured."""

    handle: object
    label: str
    lengths: list[int]
    decode_tokens: int
    stop_event: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    rows: list[ProfileRow] = field(default_factory=list)
    note: str = ""  # the progress line


class Profiles:
    """Measuring memory and speed against context length on the active model."""

    def __init__(self, app, models: ModelRegistry, turns: Turns, *, chat, status, meter) -> None:
        self.app = app
        self.models = models
        self.turns = turns
        self.chat = chat
        self.status = status
        self.meter = meter
        self.running: ProfileRun | None = None
        self.rows: list[ProfileRow] = []  # the last profile, measured on ``label``
        self.label: str | None = None
        self._handle = None  # the handle the rows were measured on
        #: Tokens decoded after each prefill (a decode speed without a long wait on a CPU).
        self.decode_tokens = APP_DECODE_TOKENS

    def refuse_turns(self) -> None:
        """The gate for sending: no turn while a profile holds the model."""
        if self.running is not None:
            raise UsageError("a memory profile is running",
                             "wait for it, or press Esc in the memory screen (F9) to stop it")

    def start(self, arg: str = "") -> ProfileRun:
        """Profile the active model at the lengths in ``arg`` (``256,512,1k``; empty: the
        defaults that fit its context). Refusals raise UsageError (a chat notice)."""
        if self.running is not None:
            raise UsageError("a memory profile is already running",
                             "wait for it, or press Esc in the memory screen (F9) to stop it")
        if self.turns.turn is not None:
            raise UsageError("a reply is still being generated", "press Esc to stop it, then profile")
        if self.models.loading is not None:
            raise UsageError("a model is loading", "profile when it is ready")
        handle = self.models.handle
        if handle is None:
            raise UsageError("no model is loaded", "press F2 to pick one, then profile")
        if not handle.torch:
            raise UsageError(f"a profile measures a transformers model in this process; {handle.info.label} runs "
                             f"on {handle.info.device}", "the meter shows the memory it uses")
        decode = self.decode_tokens
        arg = (arg or "").strip()
        lengths = parse_lengths(arg, "/profile") if arg else default_lengths(handle, decode)
        check_lengths(lengths, context_limit(handle), decode, "/profile")
        run = ProfileRun(handle, self.models.current.label, lengths, decode)
        run.note = f"profiling {len(lengths)} context lengths ({', '.join(f'{n:,}' for n in lengths)}) · " \
                   f"{decode} decode tokens each"
        self.running = run
        self.status.set(profile="profiling…")
        for screen in self._screens():
            screen.show_progress(run.note, running=True)
        self.app.run_worker(partial(self._work, run), name="profile", group="profile", thread=True,
                            exit_on_error=False)
        return run

    def start_or_say_why(self, arg: str = "") -> None:
        """``p``, the palette: a refusal goes to the memory screen when one is open, else to the chat."""
        try:
            self.start(arg)
        except UsageError as err:
            screens = self._screens()
            for screen in screens:
                screen.show_progress(str(err), error=True)
            if not screens:
                self.chat.add_notice(str(err), error=True)

    def stop(self) -> bool:
        """Ask the running profile to stop (between two steps); False when there is none to stop."""
        run = self.running
        if run is None or run.stop_event.is_set():
            return False
        run.stop_event.set()
        run.note = "stopping the profile… (the rows measured so far stay)"
        self.status.set(profile="stopping the profile…")
        for screen in self._screens():
            screen.show_progress(run.note, running=False)
        return True

    def _work(self, run: ProfileRun) -> None:
        """In the worker thread: measure, post progress, always end with ProfileDone."""
        measured: list[ProfileRow] = []
        error = None

        def progress(text: str, fraction: float | None = None) -> None:
            self.app.post_message(ProfileProgress(run, text, fraction, list(measured)))

        try:
            profile_rows(run.handle, run.lengths, run.decode_tokens, progress=progress,
                         stop_event=run.stop_event, on_row=measured.append)
        except Exception as err:  # a profile that fails is one line, never a crash
            error = error_line(err)
        finally:
            self.app.post_message(ProfileDone(run, list(measured), error))

    async def progress(self, message: ProfileProgress) -> None:
        run = message.run
        if run is not self.running or run.stop_event.is_set():
            return
        new_rows = len(message.rows) != len(run.rows)
        run.rows = message.rows
        total = len(run.lengths)
        done = len(message.rows)
        if message.fraction is not None and message.fraction < 1:
            run.note = f"{message.text} · {done} of {total} lengths measured · Esc stops"
            self.status.set(profile=f"{message.text} ({done + 1}/{total})")
        for screen in self._screens():
            if new_rows:
                await screen.show_profile(run.rows, run.label, run.note)
            else:
                screen.show_progress(run.note)

    async def done(self, message: ProfileDone) -> None:
        run = message.run
        if run is not self.running:
            return
        self.running = None
        if self.turns.turn is None:
            self.status.set(profile="")
        rows = message.rows
        if run.handle is not self.models.handle:
            # The active model changed while it ran: the rows describe a model no longer in use.
            self.chat.add_notice(f"the memory profile of {run.label} was dropped: the model changed")
            for screen in self._screens():
                screen.show_progress("", running=False)
            return
        note, failed = self._ending(run, rows, message.error)
        if rows:
            self.rows, self.label, self._handle = rows, run.label, run.handle
        if message.error:
            self.chat.add_notice(f"memory profile: {message.error}", error=True)
        screens = self._screens()
        for screen in screens:
            screen.running = False
            await screen.show_profile(self.rows, self.label, note, error=failed)
        if not screens and rows:
            self.app.push_screen(MemoryScreen(self.meter.turns, self.rows, profile_label=self.label,
                                              note=note, note_error=failed))

    def _ending(self, run: ProfileRun, rows: list[ProfileRow], error: str | None) -> tuple[str, bool]:
        """How the profile ended, in one line (and whether that is a failure)."""
        good = [r for r in rows if not r.error]
        seconds = time.monotonic() - run.started
        if error:
            return f"profile failed after {len(good)} of {len(run.lengths)} lengths: {error}", True
        oom = next((r for r in rows if r.error), None)
        if oom is not None:
            return (f"{oom.error} at {oom.context_tokens:,} tokens of context "
                    f"(the {len(good)} rows before it are complete)"), True
        if len(good) < len(run.lengths):
            return f"profile stopped: {len(good)} of {len(run.lengths)} lengths measured", False
        return f"profile done: {len(good)} lengths in {seconds:.1f} s", False

    def screen(self) -> MemoryScreen:
        """The memory screen (F9) showing the turns and the last profile."""
        run = self.running
        return MemoryScreen(self.meter.turns, self.rows, profile_label=self.label,
                            note=run.note if run is not None else None, running=run is not None
                            and not run.stop_event.is_set(), kept=self.meter.kept)

    def _screens(self) -> list[MemoryScreen]:
        return [s for s in self.app.screen_stack if isinstance(s, MemoryScreen)]

    # -- the rows belong to the model they were measured on ------------------------------------

    def model_activated(self, handle) -> None:
        if self.rows and handle is not self._handle:
            self.rows, self.label, self._handle = [], None, None
            for screen in self._screens():
                self.app.call_later(screen.show_profile, [], None, "")

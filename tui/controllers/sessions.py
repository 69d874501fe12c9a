"""Saved conversations in the app: the database, resuming, the sessions screen (F3), a damaged database.

Writing as things happen is ``session.Recorder``'s job; this piece opens the
database and puts a stored conversation back on screen through ``Turns``. A
damaged database (found on open by ``PRAGMA quick_check``, or later by a
failing write) is never written to: the status bar says so until F3 has moved
it aside and started a new one.

The database work runs in a thread worker, never on the UI thread: opening
(the check, migrations) as the app starts, and reading a conversation for
``--resume`` or F3. The worker posts one message (``StoreOpened``,
``ConversationLoaded``) whose handler shows the result. Meanwhile the
recorder holds writes back (``Recorder.opening``), and no turn is sent while
a conversation is on its way (``refuse_turns``): it would go into the one
about to be replaced.
"""

from __future__ import annotations

import sqlite3
import time
from functools import partial
from pathlib import Path

from backends.core.errors import LlmTuiError, UsageError
from backends.core.paths import data_dir
from backends.storage.store import Store, StoreDamaged, default_db_path, move_aside

from ..messages import ConversationLoaded, StoreOpened
from ..screens.damaged_store import DamagedStoreScreen
from ..screens.sessions import SessionsScreen
from ..session import Recorder
from ..widgets.reply import Notice
from .turns import Turns

NOT_SAVING = "conversations are not saved: the database is damaged (F3)"


class Sessions:
    def __init__(self, app, recorder: Recorder, turns: Turns, *, chat, status) -> None:
        self.app = app
        self.recorder = recorder
        self.turns = turns
        self.chat = chat
        self.status = status
        self.path: Path | None = None
        #: A conversation is being read for the screen (``--resume``, F3): no turn until it is there.
        self.loading = False
        #: Set once the database was opened, or could not be (``StoreOpened`` was handled).
        self.store_ready = False
        self._at_start = False  # the conversation on its way is --resume's: the start's notices stay

    def export(self, formats: tuple[str, ...] = ("md", "json"), path: str | None = None) -> None:
        if self.recorder.store is None and self.recorder.damaged is None and self.store_ready:
            raise UsageError("there is nothing to export: conversations are not being saved (no database)",
                             "the line at the start says why")
        written = self.recorder.export(formats, path, data_dir() / "exports")
        if not written:
            raise UsageError("there is nothing to save yet", "send a message first")
        self.chat.add_notice("saved " + ", ".join(str(p) for p in written))

    def refuse_turns(self) -> None:
        """The gate for sending: not while a saved conversation is on its way to the screen."""
        if self.loading:
            raise UsageError("a saved conversation is being opened", "send this once it is on screen")

    # -- opening the database and conversations, in thread workers ---------------------------------

    def open_store(self, path, resume: str | None = None) -> None:
        """Open the database in a worker (then ``resume`` a conversation: ``latest`` or an id); when
        it cannot be opened, ``opened`` says so and the app goes on without saving."""
        self.path = Path(path) if path is not None else default_db_path()
        self.recorder.opening()  # a message sent meanwhile is written once the check has passed
        self.loading = resume is not None
        self._at_start = resume is not None
        self.app.run_worker(partial(self._open_store_work, self.path, resume), name="open the database",
                            group="sessions", thread=True, exit_on_error=False)

    def _open_store_work(self, path: Path, resume: str | None) -> None:
        """In the worker: the check and migrations, then the conversation to resume, all before
        any write the UI asked for meanwhile goes ahead."""
        started = time.perf_counter()
        try:
            try:
                store, error = Store(path), None
            except LlmTuiError as err:  # damaged, a newer schema, a folder that cannot be made
                store, error = None, err
            if not self.recorder.attach(store):
                return  # the app ended meanwhile
            self.app.post_message(StoreOpened(path, error, time.perf_counter() - started))
            if resume is not None:
                self._load_work(resume, time.perf_counter())
        finally:
            self.recorder.opened()

    def opened(self, message: StoreOpened) -> None:
        """``StoreOpened``: say why there is no database, if there is none."""
        self.store_ready = True
        if isinstance(message.error, StoreDamaged):
            self.damaged(message.error)
        elif message.error is not None:  # kept in the chat, where it is seen: the app goes on without saving
            self.chat.add_notice(f"conversations will not be saved: {message.error}", error=True)

    def _load_work(self, which: str | int, started: float) -> None:
        """In a worker: read conversation ``which`` (an id, ``latest`` or an id as typed) and post
        ``ConversationLoaded`` — always, so the gate opens again whatever happened."""
        message = ConversationLoaded(None)
        try:
            message = self._read(which)
        except StoreDamaged:
            pass  # the recorder let the database go; on_damaged has said why
        except UsageError as err:
            message = ConversationLoaded(None, str(err), error=True)
        finally:
            message.seconds = time.perf_counter() - started
            self.app.post_message(message)

    def _read(self, which: str | int) -> ConversationLoaded:
        store = self.recorder.store
        if store is None:
            return ConversationLoaded(None)
        if isinstance(which, int):
            conv_id = which
        else:
            conv_id = store.latest_conversation_id() if which == "latest" else int(which) if which.isdigit() else None
        if conv_id is None:
            return ConversationLoaded(None, "there is no saved conversation to resume" if which == "latest"
                                      else f"'{which}' is not a conversation id", error=which != "latest")
        stored = self.recorder.open(conv_id)
        return ConversationLoaded(stored, forked_from=self.recorder.forked_from)

    async def loaded(self, message: ConversationLoaded) -> None:
        """``ConversationLoaded``: the conversation on screen (or why not), then turns go again."""
        try:
            if message.stored is not None:
                # --resume: the lines said while it was read (the model loaded, a warning) stay,
                # after the conversation, in the same order whichever worker finished first.
                said = tuple(self.chat.query(Notice)) if self._at_start else ()
                await self._show(message.stored, message.forked_from, said)
            elif message.notice:
                self.chat.add_notice(message.notice, error=message.error)
        finally:
            self.loading = self._at_start = False

    def damaged(self, err: StoreDamaged) -> None:
        """The database is damaged: keep saying so, and write nothing to it."""
        self.recorder.damaged = err
        self.status.set(alert=NOT_SAVING)
        self.chat.add_notice(str(err), error=True)

    def open_screen(self) -> None:
        if self.loading or self.recorder.is_opening:
            self.app.notify("the conversation database is still being opened", severity="warning", markup=False)
            return
        if self.recorder.damaged is not None:
            err = self.recorder.damaged
            self.app.push_screen(DamagedStoreScreen(str(err.path), err.detail), self._move_aside)
            return
        if self.recorder.store is None:
            self.app.notify("conversations are not being saved (no database)", severity="warning", markup=False)
            return

        def chosen(conv_id: int | None) -> None:
            if conv_id is not None and conv_id != self.recorder.conversation_id:
                self.turns.abandon()
                self.open(conv_id)

        try:
            screen = SessionsScreen(self.recorder.store, self.recorder.conversation_id)
        except sqlite3.DatabaseError as err:  # damage quick_check did not see at start
            self.recorder.fail(err)
            return
        self.app.push_screen(screen, chosen)

    def _move_aside(self, move: bool | None) -> None:
        if not move:
            return
        path = self.recorder.damaged.path
        try:
            moved = move_aside(path)
            store = Store(path)
        except (OSError, LlmTuiError) as err:
            self.chat.add_notice(f"could not start a new database: {err}", error=True)
            return
        self.recorder.start_over(store, self.turns.messages_to_save())
        self.status.set(alert="")
        self.chat.add_notice(f"the damaged database is now {moved}; a new one was started and this "
                             "conversation is saved in it")

    def open(self, conv_id: int) -> None:
        """Read conversation ``conv_id`` in a worker; ``loaded`` puts it on screen."""
        self.recorder.opening()  # nothing is written while the recorder moves to it
        self.loading = True
        self.app.run_worker(partial(self._open_work, conv_id), name="open the conversation", group="sessions",
                            thread=True, exit_on_error=False)

    def _open_work(self, conv_id: int) -> None:
        try:
            self._load_work(conv_id, time.perf_counter())
        finally:
            self.recorder.opened()

    async def _show(self, stored, forked_from, said: tuple = ()) -> None:
        await self.turns.restore(stored, keep=said)
        if forked_from is not None:
            original, pid = forked_from
            who = f"another llm-tui (process {pid})" if pid else "another llm-tui"
            self.chat.add_notice(f"conversation {original} is open in {who}: continuing in a copy, "
                                 f"conversation {stored.id} ({len(stored.messages)} messages)")
        else:
            self.chat.add_notice(f"reopened conversation {stored.id} ({len(stored.messages)} messages)")
        self.chat.move_to_end(said)

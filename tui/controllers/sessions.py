"""Saved conversations in the app: the database, resuming, the sessions screen (F3), a damaged database.

Writing as things happen is ``session.Recorder``'s job; this piece opens the
database and puts a stored conversation back on screen through ``Turns``. A
damaged database (found on open by ``PRAGMA quick_check``, or later by a
failing write) is never written to: the status bar says so until F3 has moved
it aside and started a new one.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from backends.core.errors import LlmTuiError, UsageError
from backends.core.paths import data_dir
from backends.storage.store import Store, StoreDamaged, default_db_path, move_aside

from ..screens.damaged_store import DamagedStoreScreen
from ..screens.sessions import SessionsScreen
from ..session import Recorder
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

    def export(self, formats: tuple[str, ...] = ("md", "json"), path: str | None = None) -> None:
        written = self.recorder.export(formats, path, data_dir() / "exports")
        if not written:
            raise UsageError("there is nothing to save yet", "send a message first")
        self.chat.add_notice("saved " + ", ".join(str(p) for p in written))

    def open_store(self, path) -> None:
        """Open the database; when it cannot be, say so and go on without saving."""
        self.path = Path(path) if path is not None else default_db_path()
        try:
            self.recorder.store = Store(self.path)
        except StoreDamaged as err:
            self.damaged(err)
        except LlmTuiError as err:
            self.app.notify(f"conversations will not be saved: {err}", severity="warning", markup=False)

    def damaged(self, err: StoreDamaged) -> None:
        """The database is damaged: keep saying so, and write nothing to it."""
        self.recorder.damaged = err
        self.status.set(alert=NOT_SAVING)
        self.chat.add_notice(str(err), error=True)

    def open_screen(self) -> None:
        if self.recorder.damaged is not None:
            err = self.recorder.damaged
            self.app.push_screen(DamagedStoreScreen(str(err.path), err.detail), self._move_aside)
            return
        if self.recorder.store is None:
            self.app.notify("conversations are not being saved (no database)", severity="warning", markup=False)
            return

        async def chosen(conv_id: int | None) -> None:
            if conv_id is not None and conv_id != self.recorder.conversation_id:
                self.turns.abandon()
                await self.open(conv_id)

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

    async def resume(self, which: str) -> None:
        """``--resume [ID]``: the latest conversation, or the one with that id."""
        store = self.recorder.store
        if store is None:
            return
        conv_id = store.latest_conversation_id() if which == "latest" else int(which) if which.isdigit() else None
        if conv_id is None:
            self.chat.add_notice("there is no saved conversation to resume" if which == "latest"
                                 else f"'{which}' is not a conversation id", error=which != "latest")
            return
        try:
            await self.open(conv_id)
        except UsageError as err:
            self.chat.add_notice(str(err), error=True)

    async def open(self, conv_id: int) -> None:
        try:
            stored = self.recorder.open(conv_id)
        except StoreDamaged:
            return  # the recorder let the database go; on_damaged has said why
        await self.turns.restore(stored)
        if self.recorder.forked_from is not None:
            original, pid = self.recorder.forked_from
            who = f"another llm-tui (process {pid})" if pid else "another llm-tui"
            self.chat.add_notice(f"conversation {original} is open in {who}: continuing in a copy, "
                                 f"conversation {stored.id} ({len(stored.messages)} messages)")
        else:
            self.chat.add_notice(f"reopened conversation {conv_id} ({len(stored.messages)} messages)")

"""Saved conversations in the app: the database, resuming, and the sessions screen (F3).

Writing as things happen is ``session.Recorder``'s job; this piece opens the
database and puts a stored conversation back on screen through ``Turns``.
"""

from __future__ import annotations

from backends.core.errors import LlmTuiError, UsageError
from backends.storage.store import Store

from ..screens.sessions import SessionsScreen
from ..session import Recorder
from .turns import Turns


class Sessions:
    def __init__(self, app, recorder: Recorder, turns: Turns, *, chat) -> None:
        self.app = app
        self.recorder = recorder
        self.turns = turns
        self.chat = chat

    def open_store(self, path) -> None:
        """Open the database; when it cannot be, say so and go on without saving."""
        try:
            self.recorder.store = Store(path)
        except LlmTuiError as err:
            self.app.notify(f"conversations will not be saved: {err}", severity="warning", markup=False)

    def open_screen(self) -> None:
        if self.recorder.store is None:
            self.app.notify("conversations are not being saved (no database)", severity="warning", markup=False)
            return

        async def chosen(conv_id: int | None) -> None:
            if conv_id is not None and conv_id != self.recorder.conversation_id:
                self.turns.abandon()
                await self.open(conv_id)

        self.app.push_screen(SessionsScreen(self.recorder.store, self.recorder.conversation_id), chosen)

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
        stored = self.recorder.open(conv_id)
        await self.turns.restore(stored)
        self.chat.add_notice(f"reopened conversation {conv_id} ({len(stored.messages)} messages)")

"""Saved conversations in the app: resume, the sessions screen, and saving as things happen.

A mixin of ``LlmTuiApp``; the database work is in ``session.Recorder``.
"""

from __future__ import annotations

from backends.core.errors import UsageError

from .screens.sessions import SessionsScreen
from .worker import error_line


class SessionFlow:
    """Reopening conversations and keeping the database in step with the chat."""

    def action_sessions(self) -> None:
        if self.recorder.store is None:
            self.notify("conversations are not being saved (no database)", severity="warning", markup=False)
            return

        async def chosen(conv_id: int | None) -> None:
            if conv_id is not None and conv_id != self.recorder.conversation_id:
                self._stop_turn()
                await self.open_conversation(conv_id)

        self.push_screen(SessionsScreen(self.recorder.store, self.recorder.conversation_id), chosen)

    async def _resume(self, which: str) -> None:
        store = self.recorder.store
        if store is None:
            return
        conv_id = store.latest_conversation_id() if which == "latest" else int(which) if which.isdigit() else None
        if conv_id is None:
            self.chat.add_notice("there is no saved conversation to resume" if which == "latest"
                                 else f"'{which}' is not a conversation id", error=which != "latest")
            return
        try:
            await self.open_conversation(conv_id)
        except UsageError as err:
            self.chat.add_notice(str(err), error=True)

    async def open_conversation(self, conv_id: int) -> None:
        stored = self.recorder.open(conv_id)
        self.conversation = stored.to_conversation()
        self.params = stored.sampling_params() if stored.params else self.params
        self.status.set(budget=self.params.max_prompt_tokens)
        await self.chat.clear()
        for m in stored.messages:
            if m.role == "user":
                self.chat.add_user(m.content)
            elif m.role == "assistant":
                await self.chat.add_reply(m.model or stored.model or "", m.content, status=m.status, stats=m.stats)
        self.chat.add_notice(f"reopened conversation {conv_id} ({len(stored.messages)} messages)")
        self.schedule_preview(now=True)

    def _stored_count(self) -> int:
        return sum(1 for m in self.conversation.messages if m["role"] != "system")

    def _record(self, role: str, text: str, **kw) -> int | None:
        try:
            return self.recorder.add(role, text, **kw)
        except Exception as err:  # the chat goes on without the database
            self.notify(f"could not save: {error_line(err)}", severity="warning", markup=False)
            return None

    def _finish_record(self, msg_id, text: str, status: str, done) -> None:
        """Save how a reply ended; a reply with no text is dropped, as it is from the chat."""
        try:
            if text:
                self.recorder.finish(msg_id, text, status, done)
            else:
                self.recorder.drop(msg_id)
        except Exception as err:
            self.notify(f"could not save: {error_line(err)}", severity="warning", markup=False)

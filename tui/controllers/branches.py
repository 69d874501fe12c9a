"""Branches of a turn: go on from an alternative token (1-9 on the token cursor), and step
through the turn's replies ([ ]).

A branch keeps the reply's first tokens as they are (their IDs, never
re-tokenised), puts the chosen alternative after them, and lets the model go
on from there; the reply it replaces stays in the database as a branch of the
same turn. Only the last reply branches: an earlier one would change what the
later turns answered.
"""

from __future__ import annotations

from backends.core.errors import UsageError
from backends.generation.branch import branch_prefix

from ..session import Recorder
from ..widgets.chat import Reply
from .turns import Turns


class Branches:
    def __init__(self, app, turns: Turns, recorder: Recorder, *, chat) -> None:
        self.app = app
        self.turns = turns
        self.recorder = recorder
        self.chat = chat

    def _refuse(self, reply: Reply) -> str | None:
        """Why this reply cannot branch now, or None."""
        if self.turns.turn is not None:
            return "a reply is still being generated — press Esc to stop it first"
        if reply is not self.chat.last_reply():
            return "only the last reply branches: an earlier one would change what the later turns answered"
        return None

    async def take_alternative(self, reply: Reply, index: int, rank: int) -> None:
        why = self._refuse(reply)
        prefix = None
        try:
            if why is None:
                prefix = branch_prefix(reply.tokens, index, rank)
                self.turns.check_can_send()
        except UsageError as err:
            why = str(err)
        if why is not None:
            self.chat.add_notice(why, error=True)
            return
        chosen = prefix[-1]
        count = self.recorder.keep_as_branch(reply.message_id) or 1
        self.turns.conversation.pop_last_reply()
        self.chat.action_leave()
        await self.chat.remove_from_last(Reply)
        self.chat.add_notice(f"branch {count} of {count}: token {index + 1} is now {chosen.text!r} "
                             f"(alternative {rank}); the earlier reply is kept, [ ] go between them")
        await self.turns.generate(prefix=prefix, message_id=reply.message_id,
                                  branch=(count, count) if count > 1 else None)

    async def step(self, reply: Reply, step: int) -> None:
        why = self._refuse(reply)
        found = None if why is not None else self.recorder.step_branch(reply.message_id, step)
        if why is None and found is None:
            why = "this turn has one reply: 1-9 on a token takes an alternative and makes a branch"
        if why is not None:
            self.chat.add_notice(why, error=True)
            return
        stored, place = found
        reply.branch = place
        reply.tokens = list(stored.tokens or [])
        stats = stored.stats or {}
        await reply.finish(stored.content, stored.status, stats, stats.get("stop_reason"))
        self.chat.redraw(reply)
        if self.chat.cursor is not None and self.chat.cursor[0] is reply:
            self.chat.action_leave()
        self.turns.conversation.pop_last_reply()
        self.turns.conversation.add_assistant(stored.content)
        self.turns.changed()

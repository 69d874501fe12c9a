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
from ..widgets.compared import compared_turn_of
from ..widgets.reply import Reply
from .turns import Replaced, TurnRequest, Turns, made_by


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
        if compared_turn_of(reply) is not None:
            return "a compared turn's replies stand side by side: Enter on one keeps it (/keep N)"
        if reply is not self.chat.last_reply():
            return "only the last reply branches: an earlier one would change what the later turns answered"
        return None

    def _other_model(self, reply: Reply) -> str | None:
        """Why the active model cannot go on from this reply's token IDs (another model made them), or None."""
        handle = self.turns.models.handle
        if handle is None:
            return None  # check_can_send says why
        same = reply.made_by == made_by(handle) if reply.made_by is not None else reply.model == handle.info.label
        if same:
            return None
        return f"this reply came from {reply.model}; switch to it to branch (its token IDs mean nothing to another model)"

    async def take_alternative(self, reply: Reply, index: int, rank: int) -> None:
        why = self._refuse(reply)
        prefix = None
        try:
            if why is None:
                prefix = branch_prefix(reply.tokens, index, rank)
                self.turns.check_can_send()
                why = self._other_model(reply)
        except UsageError as err:
            why = str(err)
        if why is not None:
            self.chat.add_notice(why, error=True)
            return
        chosen = prefix[-1]
        # Nothing is written yet: the reply is kept among the branches once the new one has words.
        count = (self.recorder.reply_count(reply.message_id) or 1) + 1
        self.chat.action_leave()
        notice = (f"branch {count} of {count}: token {index + 1} is now {chosen.text!r} "
                  f"(alternative {rank}); the earlier reply is kept, [ ] go between them")
        await self.turns.generate(request=TurnRequest(prefix, Replaced.of(reply), (count, count), notice))

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

"""Keeps the open conversation saved as it happens, through backends.store.

The recorder knows the database ids of the conversation and of each of its
messages, in the order of the chat (the system prompt is stored on the
conversation, not as a message). Writes go straight to SQLite; the store is
thread-safe, so a streaming reply can be saved from the generation worker.

A database found damaged while the app runs (``database disk image is
malformed``) is let go at once: nothing more is written to it, and
``on_damaged`` hears why (the app keeps that line on screen).

The database is opened, checked and read in a thread worker (``opening`` …
``opened``): a write asked for meanwhile (a message sent as the app starts)
waits for it, so nothing is written before ``PRAGMA quick_check`` has passed
and nothing goes into a conversation that is about to be replaced.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from pathlib import Path
from typing import Callable

from backends.storage.export import conversation_json, conversation_markdown
from backends.storage.locks import ConversationLock
from backends.storage.store import Store, StoreDamaged
from backends.storage.tokens import StoredToken

_UNSET: object = object()


def _guarded(method):
    """A store call that meets a damaged database lets the database go (``Recorder.fail``) and carries on."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        self._ready.wait()  # the database is being opened or a conversation loaded: write after it
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as err:
            self.fail(err)
            return None

    return run


_STATUS_OF = {"eos": "complete", "length": "complete", "stopped": "stopped", "error": "error"}


def reply_status(stop_reason: str | None) -> str:
    """How a reply that ended for ``stop_reason`` is saved and drawn: complete, stopped or error."""
    return _STATUS_OF.get(stop_reason, "complete")


def reply_stats(done, made_by: str | None) -> dict:
    """A finished reply's figures as saved and drawn: the turn's stats, why it stopped, who made its IDs."""
    return {**done.stats.to_json(), "stop_reason": done.stop_reason, "made_by": made_by}


class Recorder:
    def __init__(self, store: Store | None) -> None:
        self.store = store
        self.damaged: StoreDamaged | None = None
        #: Set by ``open`` when another llm-tui was recording that conversation: (its id, that
        #: process's id); this one then continues in a copy.
        self.forked_from: tuple[int, int | None] | None = None
        self._locks: ConversationLock | None = None
        self.on_damaged: Callable[[StoreDamaged], None] = lambda error: None
        self.conversation_id: int | None = None
        self.message_ids: list[int] = []  # one per non-system message, in order
        self._lock = threading.Lock()
        self._finished: set[int] = set()  # replies whose end is saved: no more checkpoints
        self._pending_model: dict = {}  # model and meta to write with the next message
        self._system: str | None = None
        self._params: dict = {}
        self._model: str | None = None
        self._meta: dict = {}
        self._ready = threading.Event()  # clear while a worker opens the database or a conversation
        self._ready.set()
        self._closed = False  # set by close: a store opened after that is closed, not used

    def opening(self) -> None:
        """A worker opens the database (or a conversation) from now until ``opened``: writes wait."""
        self._ready.clear()

    def opened(self) -> None:
        """The worker is done (whether or not it got a database): waiting writes go ahead."""
        self._ready.set()

    def attach(self, store: Store | None) -> bool:
        """Record into ``store`` (opened by a worker); False, and the store closed, when the recorder
        was closed meanwhile (the app ended while the database was being checked)."""
        with self._lock:
            if self._closed:
                if store is not None:
                    store.close()
                return False
            self.store = store
            return True

    @property
    def is_opening(self) -> bool:
        return not self._ready.is_set()

    def fail(self, err: sqlite3.DatabaseError) -> StoreDamaged:
        """The database broke under us: stop using it, say so once, and return the error."""
        store, self.store = self.store, None
        damaged = StoreDamaged(store.path if store is not None else Path("?"), str(err))
        if store is not None:
            store.abandon()
        if self.damaged is None:
            self.damaged = damaged
            self.on_damaged(damaged)
        return damaged

    def start_over(self, store: Store, messages: list[tuple[str, str, str | None]]) -> None:
        """Record into ``store`` from now on (a new database after a damaged one was moved aside),
        beginning with the open conversation's ``(role, text, model)`` messages."""
        self.store, self.damaged, self._closed = store, None, False
        self.new()
        for role, text, model in messages:
            self.add(role, text, model=model)

    # -- conversation ---------------------------------------------------------

    def configure(self, *, system: object = _UNSET, params: object = _UNSET,
                  model: object = _UNSET, meta: object = _UNSET) -> None:
        """What the next conversation starts with.

        The open conversation gets a new system prompt or parameters at once; a new
        model is written with the next message, when the model is really used.
        """
        now, later = {}, {}
        for name, value in (("system", system), ("params", params), ("model", model), ("meta", meta)):
            if value is not _UNSET:
                setattr(self, "_" + name, value)
                (later if name in ("model", "meta") else now)[name] = value
        self._pending_model.update(later)
        if now and self.conversation_id is not None:
            self._write_settings(now)  # only a write waits for the database: the settings are kept already

    @_guarded
    def _write_settings(self, now: dict) -> None:
        if self.store is not None and self.conversation_id is not None:
            self.store.update_conversation(self.conversation_id, **now)

    def _conversation_lock(self) -> ConversationLock | None:
        """The conversation lock beside this store's file (None for an in-memory store)."""
        if self.store is None or str(self.store.path) == ":memory:":
            return None
        folder = self.store.path.parent / "locks"
        if self._locks is None or self._locks.folder != folder:
            if self._locks is not None:
                self._locks.release()
            self._locks = ConversationLock(folder)
        return self._locks

    def _ensure(self) -> int | None:
        if self.store is None:
            return None
        if self.conversation_id is None:
            self.conversation_id = self.store.new_conversation(
                self._model, self._system, self._params, meta=self._meta)
            self.message_ids = []
            if (lock := self._conversation_lock()) is not None:
                lock.acquire(self.conversation_id)
        elif self._pending_model:
            self.store.update_conversation(self.conversation_id, **self._pending_model)
        self._pending_model = {}
        return self.conversation_id

    def new(self) -> None:
        """The next message starts a new stored conversation."""
        self.conversation_id = None
        self.message_ids = []
        if self._locks is not None:
            self._locks.release()

    def close(self) -> None:
        """Let go of the conversation and close the database (safe to call twice)."""
        if self._locks is not None:
            self._locks.release()
        with self._lock:
            self._closed = True
            store, self.store = self.store, None
        if store is not None:
            store.close()

    def open(self, conv_id: int):
        """Load a stored conversation and continue recording into it."""
        try:
            return self._open(conv_id)
        except sqlite3.DatabaseError as err:
            raise self.fail(err) from None

    def _open(self, conv_id: int):
        self.forked_from = None
        lock = self._conversation_lock()
        if lock is not None and not lock.acquire(conv_id):
            holder = lock.holder(conv_id)
            copy = self.store.copy_conversation(conv_id)
            lock.acquire(copy)
            self.forked_from, conv_id = (conv_id, holder), copy
        stored = self.store.load_conversation(conv_id)
        messages = [m for m in stored.messages if m.role != "system"]
        if messages and not messages[-1].said:  # killed before the reply's first words were saved
            self.store.delete_messages_after(stored.id, messages[-1].position - 1)
            stored = self.store.load_conversation(conv_id)
            messages = messages[:-1]
        self.conversation_id = stored.id
        self.message_ids = [m.id for m in messages]
        self._system, self._params = stored.system, dict(stored.params)
        if (self._model, self._meta) != (stored.model, stored.meta):
            self._pending_model = {"model": self._model, "meta": self._meta}  # the model now open
        return stored

    # -- messages ---------------------------------------------------------------

    @_guarded
    def add(self, role: str, content: str, *, status: str = "complete", model: str | None = None,
            stats: dict | None = None) -> int | None:
        conv = self._ensure()
        if conv is None:
            return None
        msg_id = self.store.add_message(conv, role, content, status=status, model=model, stats=stats)
        self.message_ids.append(msg_id)
        return msg_id

    @_guarded
    def restart(self, msg_id: int | None, model: str | None) -> None:
        """A reply is generated again in place (a branch goes on from its first tokens)."""
        if self.store is None or msg_id is None:
            return
        with self._lock:
            self._finished.discard(msg_id)
        self.store.reset_message(msg_id, model)

    @_guarded
    def keep_as_branch(self, msg_id: int | None) -> int:
        """Keep a reply as it is as one of its turn's branches; returns how many replies the turn has."""
        if self.store is None or msg_id is None:
            return 1
        self.store.keep_as_branch(msg_id)
        return self.store.branch_count(msg_id) + 1

    @_guarded
    def add_compared(self, replies: list[dict], kept: int) -> int | None:
        """A compared turn's replies, each a dict of ``finish``'s arguments plus ``model``: the kept one
        in place, the others as the turn's branches (in pane order). Returns the message's id."""
        order = [i for i in range(len(replies)) if i != kept] + [kept]
        msg_id = self.add("assistant", "", status="partial", model=replies[order[0]]["model"])
        for n, index in enumerate(order):
            reply = replies[index]
            if n:
                self.restart(msg_id, reply["model"])
            self.finish(msg_id, reply["text"], reply["status"], reply["done"], reply["tokens"], reply["made_by"],
                        reply["more_stats"])
            if index != kept:
                self.store.keep_as_branch(msg_id)
        return msg_id

    @_guarded
    def keep_compared(self, msg_id: int | None, pane: int) -> None:
        """Put the compared reply of pane ``pane`` in place of the one kept so far (which becomes a branch)."""
        if self.store is None or msg_id is None:
            return
        for branch in self.store.branches_of(msg_id):
            if ((branch.stats or {}).get("compare") or {}).get("pane") == pane:
                self.store.switch_branch(msg_id, branch.id)
                return

    @_guarded
    def reply_count(self, msg_id: int | None) -> int:
        """How many replies the turn of ``msg_id`` has: the one in place and its branches."""
        if self.store is None or msg_id is None:
            return 1
        return self.store.branch_count(msg_id) + 1

    @_guarded
    def step_branch(self, msg_id: int | None, step: int):
        """Put the turn's next (1) or previous (-1) reply in place; returns it (a ``StoredMessage``)
        and its place ``(n, of)`` among the turn's replies, oldest first, or None when it has none."""
        if self.store is None or msg_id is None:
            return None
        branches = self.store.branches_of(msg_id)
        if not branches:
            return None
        current = self.store.message(msg_id)
        replies = sorted([current, *branches], key=lambda r: r.created)
        target = replies[(replies.index(current) + step) % len(replies)]
        self.store.switch_branch(msg_id, target.id)
        return self.store.message(msg_id), (replies.index(target) + 1, len(replies))

    def checkpoint(self, msg_id: int | None, text: str) -> None:
        """Save the reply so far; called from the generation worker."""
        self._ready.wait()
        if self.store is None or msg_id is None:
            return
        with self._lock:
            if msg_id in self._finished:
                return
            try:
                self.store.update_message(msg_id, content=text, status="partial")
            except sqlite3.DatabaseError as err:
                self.fail(err)
            except Exception:
                pass  # a missed checkpoint must not end the reply; the next one or the end saves it

    @_guarded
    def finish(self, msg_id: int | None, text: str, status: str, done=None, tokens: list | None = None,
               made_by: str | None = None, more_stats: dict | None = None) -> None:
        """Save how a reply ended: its text, status, statistics, prompt IDs and its tokens (``TokenEvent``s);
        ``made_by`` (whose token IDs they are) and ``more_stats`` (a compared reply's figures) go with
        the statistics."""
        if self.store is None or msg_id is None:
            return
        extra = {}
        if done is not None:
            extra = {"stats": {**reply_stats(done, made_by), **(more_stats or {})},
                     "prompt_ids": done.prompt_ids, "captured_ids": done.captured_ids}
        if tokens:
            extra["tokens"] = [StoredToken(t.id, t.text, t.info) for t in tokens]
        with self._lock:
            self._finished.add(msg_id)
            self.store.update_message(msg_id, content=text, status=status, **extra)

    @_guarded
    def note_tool(self, msg_id: int | None, tool: dict, content: str | None = None) -> None:
        """A finished reply is a tool call: keep its calls and what became of each (``stats["tool"]``),
        and ``content``, the words the conversation holds of it (ChatGLM3's without the name line)."""
        if self.store is None or msg_id is None:
            return
        stats = {**(self.store.message(msg_id).stats or {}), "tool": tool}
        self.store.update_message(msg_id, stats=stats, **({"content": content} if content is not None else {}))

    @_guarded
    def drop(self, msg_id: int | None) -> None:
        """Forget a reply that ended with no text (it is the last message)."""
        if self.store is None or msg_id is None or msg_id not in self.message_ids:
            return
        with self._lock:
            self._finished.add(msg_id)
        self.truncate(self.message_ids.index(msg_id))

    @_guarded
    def truncate(self, keep: int) -> None:
        """Drop every stored message after the first ``keep`` ones (regenerate, edit, clear)."""
        if self.store is None or self.conversation_id is None:
            return
        self.store.delete_messages_after(self.conversation_id, keep - 1)
        del self.message_ids[keep:]

    # -- exports ----------------------------------------------------------------

    @_guarded
    def export(self, formats: tuple[str, ...], path: str | None, folder: Path) -> list[Path]:
        if self.store is None or self.conversation_id is None:
            return []
        written = []
        for fmt in formats:
            target = Path(path).expanduser() if path else folder / f"conversation-{self.conversation_id}.{fmt}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "md":
                target.write_text(conversation_markdown(self.store.load_conversation(self.conversation_id)), encoding="utf-8")
            else:
                data = conversation_json(self.store.load_conversation(self.conversation_id))
                target.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            written.append(target)
        return written

"""SQLite persistence of conversations and their messages.

Every write commits at once, so a reply saved while it streams survives the
process being killed. One connection per Store, guarded by a lock: the TUI
writes from worker threads. The schema is upgraded by ``PRAGMA user_version``,
one function per version.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Iterator

from backends.core.conversation import ROLES
from backends.core.errors import LlmTuiError, UsageError
from backends.core.paths import DATA_DIR_ENV, data_dir
from backends.storage import prompts
from backends.storage.migrations import REWRITTEN_BEFORE, migrate
from backends.storage.records import (
    ConversationSummary,
    StoredBranch,
    StoredConversation,
    StoredMessage,
    branch_of,
    load_json,
    message_of,
    one_line,
)
from backends.storage.tokens import StoredToken, encode_tokens

DB_NAME = "llm-tui.sqlite3"

#: How a stored message ended: finished, saved part way while streaming,
#: stopped by the user, or cut short by an error.
STATUSES = ("complete", "partial", "stopped", "error")



def default_db_path() -> Path:
    return data_dir() / DB_NAME


_UNSET: object = object()


class StoreDamaged(LlmTuiError):
    """The database file is damaged (or is not a database): nothing is written to it."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"the conversation database '{path}' is damaged ({detail}); nothing is saved to it",
                         "F3 moves it aside and starts a new one")
        self.path = path
        self.detail = detail


def move_aside(path: Path) -> Path:
    """Rename a damaged database (and its -wal and -shm files) out of the way; returns its new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(str(path) + suffix)
        if part.exists():
            part.rename(Path(str(target) + suffix))
    return target


class Store:
    """Conversations in one SQLite file (``llm-tui.sqlite3`` in the data dir by default)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        in_memory = str(path) == ":memory:"
        if not in_memory:
            _make_folder(self.path.parent)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(self.path), timeout=5.0, check_same_thread=False,
                                       isolation_level=None)
        except sqlite3.Error as err:
            raise LlmTuiError(f"cannot open the database '{self.path}': {err}",
                              "check the folder's permissions or set LLM_TUI_DATA_DIR") from None
        self._db.row_factory = sqlite3.Row
        try:
            self._check_integrity()
            if not in_memory:
                self._db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL survives a killed process; only power loss can drop the last commit.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            found = migrate(self._db)
            if 0 < found < REWRITTEN_BEFORE:
                # The upgrade rewrote every reply's IDs far smaller: give the freed pages back to the disk.
                self._db.execute("VACUUM")
        except sqlite3.OperationalError as err:
            # Locked by another program, a read-only folder, a full disk: the file may be fine, so it
            # is not called damaged (which would offer to move it aside).
            self._db.close()
            raise LlmTuiError(f"cannot use the database '{self.path}': {err}",
                              f"check the folder's permissions, or set {DATA_DIR_ENV} to use another") from None
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise StoreDamaged(self.path, str(err)) from None
        except StoreDamaged:
            self._db.close()
            raise
        except LlmTuiError:
            self._db.close()
            raise

    # -- lifecycle --------------------------------------------------------

    def _check_integrity(self) -> None:
        """``PRAGMA quick_check`` before anything is written: a damaged file is never made worse."""
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise StoreDamaged(self.path, "; ".join(problems[:2]))

    def close(self) -> None:
        """Fold the write-ahead log into the database (no -wal file is left behind), then close."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # closing still folds what it can
            self._db.close()

    def abandon(self) -> None:
        """Close without writing anything more (a damaged file is left as it is)."""
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One committed write; IMMEDIATE takes the write lock up front so two
        llm-tui processes on the same file wait for each other instead of failing."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._transaction() as db:
            return db.execute(sql, args)

    # -- conversations ------------------------------------------------------

    def new_conversation(self, model: str | None = None, system: str | None = None,
                         params: object = None, *, title: str = "", meta: dict | None = None) -> int:
        now = time.time()
        cursor = self._write(
            "INSERT INTO conversations (title, created, updated, model, system, params, meta)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (title, now, now, model, system, _dump(params) or "{}", _dump(meta) or "{}"),
        )
        return int(cursor.lastrowid)

    def copy_conversation(self, conv_id: int, title_suffix: str = " (copy)") -> int:
        """A new conversation with the same settings and messages; returns its id."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT * FROM conversations WHERE id = ?", (conv_id,)).fetchone()
            if row is None:
                raise UsageError(f"there is no saved conversation {conv_id}")
            cursor = db.execute(
                "INSERT INTO conversations (title, created, updated, model, system, params, meta)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((row["title"] or "") + title_suffix if row["title"] else "", now, now, row["model"],
                 row["system"], row["params"], row["meta"]))
            new_id = int(cursor.lastrowid)
            db.execute(
                # Positions are kept, so each reply's prompt still starts from the same earlier one.
                f"INSERT INTO messages (conversation_id, position, role, content, status, model, stats,"
                f" {_IDS}, tokens, created)"
                f" SELECT ?, position, role, content, status, model, stats, {_IDS}, tokens, created"
                " FROM messages WHERE conversation_id = ? ORDER BY position", (new_id, conv_id))
        return new_id

    def update_conversation(self, conv_id: int, *, model: object = _UNSET, system: object = _UNSET,
                            params: object = _UNSET, meta: object = _UNSET) -> None:
        """Change the model label, system prompt, parameters or model details."""
        changes: dict[str, object] = {}
        if model is not _UNSET:
            changes["model"] = model
        if system is not _UNSET:
            changes["system"] = system
        if params is not _UNSET:
            changes["params"] = _dump(params) or "{}"
        if meta is not _UNSET:
            changes["meta"] = _dump(meta) or "{}"
        self._update("conversations", conv_id, changes)

    def set_title(self, conv_id: int, title: str) -> None:
        self._update("conversations", conv_id, {"title": title})

    def delete_conversation(self, conv_id: int) -> None:
        self._write("DELETE FROM conversations WHERE id = ?", (conv_id,))

    def latest_conversation_id(self) -> int | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM conversations ORDER BY updated DESC, id DESC LIMIT 1").fetchone()
        return int(row["id"]) if row else None

    def list_conversations(self, limit: int = 50, offset: int = 0) -> list[ConversationSummary]:
        """Most recently updated first."""
        with self._lock:
            rows = self._db.execute(
                """
                SELECT c.id, c.title, c.created, c.updated, c.model,
                       (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count,
                       (SELECT substr(m.content, 1, 200) FROM messages m
                         WHERE m.conversation_id = c.id AND m.role = 'user'
                         ORDER BY m.position LIMIT 1) AS preview
                FROM conversations c
                ORDER BY c.updated DESC, c.id DESC
                LIMIT ? OFFSET ?
                """,
                (limit, offset),
            ).fetchall()
        return [
            ConversationSummary(
                id=row["id"], title=row["title"], created=row["created"], updated=row["updated"],
                model=row["model"], message_count=row["message_count"],
                preview=one_line(row["preview"] or "", 80),
            )
            for row in rows
        ]

    def load_conversation(self, conv_id: int) -> StoredConversation:
        with self._lock:
            row = self._db.execute("SELECT * FROM conversations WHERE id = ?", (conv_id,)).fetchone()
            if row is None:
                raise UsageError(f"there is no saved conversation {conv_id}", "list them with the history screen")
            rows = self._db.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY position", (conv_id,)
            ).fetchall()
            branch_rows = self._db.execute(
                "SELECT b.* FROM branches b JOIN messages m ON m.id = b.message_id"
                " WHERE m.conversation_id = ? ORDER BY b.id", (conv_id,)).fetchall()
        # Each prompt is rebuilt from the one before it, in the order of the conversation.
        bases: dict = {}
        ids: dict[int, tuple] = {}
        for r in rows:
            prompt, prompt_ids, captured_ids = prompts.decode(r, bases)
            ids[r["id"]] = (prompt_ids, captured_ids)
            if prompt is not None:
                bases[r["position"]] = prompt
        branches: dict[int, list[StoredBranch]] = {}
        for b in branch_rows:
            branches.setdefault(b["message_id"], []).append(branch_of(b, prompts.decode(b, bases)[1:]))
        return StoredConversation(
            id=row["id"], title=row["title"], created=row["created"], updated=row["updated"],
            model=row["model"], system=row["system"], params=load_json(row["params"]) or {},
            meta=load_json(row["meta"]) or {},
            messages=tuple(message_of(r, tuple(branches.get(r["id"], ())), ids[r["id"]]) for r in rows),
        )

    # -- messages -----------------------------------------------------------

    def add_message(self, conv_id: int, role: str, content: str, *, status: str = "complete",
                    model: str | None = None, stats: object = None, prompt_ids: list[int] | None = None,
                    captured_ids: list[int] | None = None) -> int:
        """Append a message at the next position; returns its id."""
        _check_role(role)
        _check_status(status)
        now = time.time()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM conversations WHERE id = ?", (conv_id,)).fetchone() is None:
                raise UsageError(f"there is no saved conversation {conv_id}")
            position = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM messages WHERE conversation_id = ?",
                                  (conv_id,)).fetchone()[0]
            cursor = db.execute(
                f"INSERT INTO messages (conversation_id, position, role, content, status, model, stats, {_IDS},"
                " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (conv_id, position, role, content, status, model, _dump(stats),
                 *prompts.encode_at(db, conv_id, position, prompt_ids, captured_ids), now),
            )
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conv_id))
        return int(cursor.lastrowid)

    def update_message(self, msg_id: int, *, content: object = _UNSET, status: object = _UNSET,
                       stats: object = _UNSET, prompt_ids: object = _UNSET,
                       captured_ids: object = _UNSET, model: object = _UNSET,
                       tokens: list[StoredToken] | object = _UNSET) -> None:
        """Change a message in place, e.g. the growing text of a streaming reply."""
        changes: dict[str, object] = {}
        if tokens is not _UNSET:
            changes["tokens"] = encode_tokens(tokens)
        if content is not _UNSET:
            changes["content"] = content
        if status is not _UNSET:
            _check_status(status)
            changes["status"] = status
        if model is not _UNSET:
            changes["model"] = model
        if stats is not _UNSET:
            changes["stats"] = _dump(stats)
        if prompt_ids is _UNSET and captured_ids is _UNSET:
            self._update("messages", msg_id, changes)
            return
        with self._transaction() as db:
            row = db.execute("SELECT conversation_id, position FROM messages WHERE id = ?", (msg_id,)).fetchone()
            if row is None:
                raise UsageError(f"there is no saved message {msg_id}")
            conv_id, position = row
            # One of the two may stay as it is: captured IDs are kept against the prompt, so both are
            # written again.
            old_prompt, old_captured = prompts.ids_of(db, "messages", msg_id)
            prompt_ids = old_prompt if prompt_ids is _UNSET else prompt_ids
            captured_ids = old_captured if captured_ids is _UNSET else captured_ids
            with prompts.keeping_dependents(db, conv_id, position):
                values = prompts.encode_at(db, conv_id, position, prompt_ids, captured_ids)
                self._apply(db, "messages", msg_id, {**changes, **dict(zip(prompts.COLUMNS, values))})

    def reset_message(self, msg_id: int, model: str | None) -> None:
        """Empty a reply to be written again in place (a branch): it is new from now on."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT conversation_id, position FROM messages WHERE id = ?", (msg_id,)).fetchone()
            if row is None:
                return
            with prompts.keeping_dependents(db, *row):
                db.execute("UPDATE messages SET content = '', status = 'partial', model = ?, stats = NULL,"
                           " prompt_base = NULL, prompt = NULL, captured = NULL, tokens = NULL, created = ?"
                           " WHERE id = ?", (model, now, msg_id))

    # -- branches: the other replies of a turn -------------------------------------------------

    def keep_as_branch(self, msg_id: int) -> int:
        """Copy a reply as it is now into its turn's branches (before it is replaced); returns the branch id."""
        with self._transaction() as db:
            # The copy starts from the same earlier prompt as the reply in place: valid as it is.
            cursor = db.execute(
                f"INSERT INTO branches (message_id, content, status, model, stats, {_IDS}, tokens,"
                f" created) SELECT id, content, status, model, stats, {_IDS}, tokens, created"
                " FROM messages WHERE id = ?", (msg_id,))
            if cursor.rowcount == 0:
                raise UsageError(f"there is no saved message {msg_id}")
        return int(cursor.lastrowid)

    def branches_of(self, msg_id: int) -> list[StoredBranch]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM branches WHERE message_id = ? ORDER BY id", (msg_id,)).fetchall()
            if not rows:
                return []
            conv_id, position = self._db.execute("SELECT conversation_id, position FROM messages WHERE id = ?",
                                                 (msg_id,)).fetchone()
            # The turn's replies all start from a prompt before it: those are rebuilt once, not per branch.
            bases = prompts.prompts_until(self._db, conv_id, position - 1)
            return [branch_of(r, prompts.decode(r, bases)[1:]) for r in rows]

    def branch_count(self, msg_id: int) -> int:
        """How many other replies (branches) the turn of reply ``msg_id`` has."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM branches WHERE message_id = ?", (msg_id,)).fetchone()[0]

    def message(self, msg_id: int) -> StoredMessage:
        with self._lock:
            row = self._db.execute("SELECT * FROM messages WHERE id = ?", (msg_id,)).fetchone()
            if row is None:
                raise UsageError(f"there is no saved message {msg_id}")
            return message_of(row, ids=prompts.ids_of(self._db, "messages", msg_id))

    def switch_branch(self, msg_id: int, branch_id: int) -> None:
        """Make branch ``branch_id`` the reply the conversation goes on from; the reply it replaces
        becomes a branch (at the end of the list)."""
        columns = f"content, status, model, stats, {_IDS}, tokens, created"
        with self._transaction() as db:
            branch = db.execute(f"SELECT {columns} FROM branches WHERE id = ? AND message_id = ?",
                                (branch_id, msg_id)).fetchone()
            if branch is None:
                raise UsageError(f"message {msg_id} has no branch {branch_id}")
            where = db.execute("SELECT conversation_id, position FROM messages WHERE id = ?", (msg_id,)).fetchone()
            # The two rows start from the same earlier prompt and swap as they are; a later reply
            # that started from the one in place is written again against the one put there.
            with prompts.keeping_dependents(db, *where):
                db.execute(f"INSERT INTO branches (message_id, {columns}) SELECT id, {columns} FROM messages"
                           " WHERE id = ?", (msg_id,))
                assignments = ", ".join(f"{name} = ?" for name in columns.split(", "))
                db.execute(f"UPDATE messages SET {assignments} WHERE id = ?", (*tuple(branch), msg_id))
                db.execute("DELETE FROM branches WHERE id = ?", (branch_id,))

    def delete_messages_after(self, conv_id: int, position: int) -> int:
        """Delete the messages after ``position`` (regenerate, edit); returns how many went."""
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND position > ?", (conv_id, position))
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), conv_id))
        return cursor.rowcount

    def _update(self, table: str, row_id: int, changes: dict[str, object]) -> None:
        if not changes:
            return
        with self._transaction() as db:
            self._apply(db, table, row_id, changes)

    @staticmethod
    def _apply(db: sqlite3.Connection, table: str, row_id: int, changes: dict[str, object]) -> None:
        now = time.time()
        if table == "conversations":
            changes = {**changes, "updated": now}
        columns = ", ".join(f"{name} = ?" for name in changes)
        cursor = db.execute(f"UPDATE {table} SET {columns} WHERE id = ?", (*changes.values(), row_id))
        if cursor.rowcount == 0:
            raise UsageError(f"there is no saved {table[:-1]} {row_id}")
        if table == "messages":
            db.execute("UPDATE conversations SET updated = ?"
                       " WHERE id = (SELECT conversation_id FROM messages WHERE id = ?)", (now, row_id))


# -- helpers -----------------------------------------------------------------

#: A reply row's ID columns, copied together whenever a row is.
_IDS = ", ".join(prompts.COLUMNS)


def _make_folder(folder: Path) -> None:
    """The database's folder, or one clear line on why it cannot be made (a file in the way, no
    permission, a read-only disk)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = (err.strerror or type(err).__name__).lower()
        raise LlmTuiError(f"cannot create {folder}: {reason}",
                          f"set {DATA_DIR_ENV} to a folder you can write") from None


def _dump(value: object) -> str | None:
    """JSON text for dicts, lists, dataclasses and objects with ``to_json()``; None stays NULL."""
    if value is None:
        return None
    if hasattr(value, "to_json"):
        value = value.to_json()
    elif is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    return json.dumps(value, ensure_ascii=False)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UsageError(f"unknown role '{role}'", "use one of: " + ", ".join(ROLES))


def _check_status(status: object) -> None:
    if status not in STATUSES:
        raise UsageError(f"unknown message status '{status}'", "use one of: " + ", ".join(STATUSES))

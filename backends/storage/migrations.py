"""The store's schema, migrated by ``PRAGMA user_version``: one function per version."""

from __future__ import annotations

import json
import sqlite3
from typing import Callable

from backends.core.errors import LlmTuiError
from backends.storage import idlists, prompts

# -- schema ------------------------------------------------------------------


def _v1(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            updated REAL NOT NULL,
            model TEXT,
            system TEXT,
            params TEXT NOT NULL DEFAULT '{}',
            meta TEXT NOT NULL DEFAULT '{}'
        )
        """
    )
    db.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'complete',
            model TEXT,
            stats TEXT,
            prompt_ids TEXT,
            captured_ids TEXT,
            created REAL NOT NULL,
            UNIQUE (conversation_id, position)
        )
        """
    )
    db.execute("CREATE INDEX conversations_by_updated ON conversations(updated)")


def _v2(db: sqlite3.Connection) -> None:
    """Each reply's tokens (IDs, texts, probabilities; ``storage.tokens``), and the other replies
    of a turn (branches) beside the one the conversation goes on from."""
    db.execute("ALTER TABLE messages ADD COLUMN tokens BLOB")
    db.execute(
        """
        CREATE TABLE branches (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            content TEXT NOT NULL,
            status TEXT NOT NULL,
            model TEXT,
            stats TEXT,
            prompt_ids TEXT,
            captured_ids TEXT,
            tokens BLOB,
            created REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX branches_by_message ON branches(message_id)")


def _v3(db: sqlite3.Connection) -> None:
    """Prompt and captured IDs once per turn (``storage.prompts``), not the whole conversation
    again in every reply: the JSON lists of each reply row become ``prompt_base``, ``prompt`` and
    ``captured``, conversation by conversation in the order of their messages."""
    for table in ("messages", "branches"):
        for column, kind in (("prompt_base", "INTEGER"), ("prompt", "BLOB"), ("captured", "BLOB")):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    conversations = [row[0] for row in db.execute("SELECT DISTINCT conversation_id FROM messages").fetchall()]
    for conv_id in conversations:
        _v3_conversation(db, conv_id)
    for table in ("messages", "branches"):
        for column in ("prompt_ids", "captured_ids"):
            try:
                db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
            except sqlite3.OperationalError:  # SQLite before 3.35 drops no column: empty it instead
                db.execute(f"UPDATE {table} SET {column} = NULL")


def _old_ids(text: str | None) -> list[int] | None:
    """A v2 JSON list of IDs; anything else (it could never be read back either) as none."""
    try:
        value = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, int) for v in value) else None


def _v3_conversation(db: sqlite3.Connection, conv_id: int) -> None:
    base = (None, None)  # the nearest earlier prompt: (position, IDs)
    for msg_id, position, prompt_text, captured_text in db.execute(
            "SELECT id, position, prompt_ids, captured_ids FROM messages WHERE conversation_id = ?"
            " ORDER BY position", (conv_id,)).fetchall():
        # The turn's other replies start from the same earlier prompt as the one in place.
        for branch_id, b_prompt, b_captured in db.execute(
                "SELECT id, prompt_ids, captured_ids FROM branches WHERE message_id = ?", (msg_id,)).fetchall():
            values = prompts.encode(_old_ids(b_prompt), _old_ids(b_captured), *base)
            db.execute("UPDATE branches SET prompt_base = ?, prompt = ?, captured = ? WHERE id = ?",
                       (*values, branch_id))
        prompt = _old_ids(prompt_text)
        values = prompts.encode(prompt, _old_ids(captured_text), *base)
        db.execute("UPDATE messages SET prompt_base = ?, prompt = ?, captured = ? WHERE id = ?", (*values, msg_id))
        if prompt is not None:
            base = (position, idlists.as_wide(prompt))


#: MIGRATIONS[n] upgrades a database from user_version n to n + 1.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2, _v3)
SCHEMA_VERSION = len(MIGRATIONS)
#: A database older than this had its reply rows rewritten (v3): worth a VACUUM once.
REWRITTEN_BEFORE = 3


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema up to SCHEMA_VERSION; returns the version found."""
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise LlmTuiError(
            f"the conversation database was written by a newer llm-tui"
            f" (schema {found}, this one knows {SCHEMA_VERSION})",
            "upgrade llm-tui, or set LLM_TUI_DATA_DIR to use another folder")
    for version in range(found, SCHEMA_VERSION):
        # Each step and its version bump commit together or not at all.
        db.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return found
